//! The userspace pipeline alone: synthetic kernel records, built as the BPF
//! programs build them (the `nstrace-common` `#[repr(C)]` structs, as raw
//! bytes), through decode -> model -> explanation -> NDJSON into
//! `io::sink()`. Throughput is in events per second.
//!
//! Two streams:
//! - `ns-rounds`: what `nstrace-bench ns` makes per round (fork, unshare of a
//!   user and a mount namespace, two mounts, an umount2, exit), plus a failed
//!   mount with its capability check every round, so explanations run too;
//! - `umount-storm`: failing umount2 calls only (the storm of the loss test).
//!
//! `cargo bench -p nstrace --bench pipeline` (or `cargo xtask bench`).
//! What the live pipeline adds on top (reading /proc for new mount
//! namespaces and for the targets of failed calls) is not measured here.

use std::hint::black_box;
use std::io;
use std::mem::size_of;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nstrace::decode::Decoder;
use nstrace::event::Event;
use nstrace::explain::{Explainer, Hooks};
use nstrace::model::Model;
use nstrace::output::ndjson::NdjsonSink;
use nstrace::output::Sink;
use nstrace::syscalls;
use nstrace_common::{
    CapRecord, ExitRecord, ForkRecord, Header, NsIds, RecordKind, SyscallRecord, TaskState,
    UserNsInfo, COMM_LEN,
};

/// The bytes of a plain-data record, as the ring buffer hands them over.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: every nstrace-common record is plain integers and byte arrays.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn header(kind: RecordKind, ts_ns: u64, pid: u32) -> Header {
    let mut comm = [0u8; COMM_LEN];
    comm[..13].copy_from_slice(b"nstrace-bench");
    Header {
        kind: kind as u32,
        lost_before: 0,
        ts_ns,
        pid,
        tid: pid,
        comm,
    }
}

fn nr(name: &str) -> u32 {
    syscalls::by_name(name).map_or(0, |d| d.nr)
}

const HOST: NsIds = NsIds {
    inum: [
        4026531837, 4026531841, 4026531836, 4026531840, 4026531838, 4026531839, 4026531835,
        4026531834, 4026531836, 4026531834,
    ],
};

#[allow(clippy::too_many_arguments)]
fn syscall(
    name: &str,
    ts_ns: u64,
    pid: u32,
    ret: i64,
    args: [u64; 6],
    strs: &[&[u8]],
    ns_before: NsIds,
    ns_after: NsIds,
) -> Vec<u8> {
    let mut rec = SyscallRecord {
        header: header(RecordKind::Syscall, ts_ns, pid),
        exit_ts_ns: ts_ns + 2_000,
        nr: nr(name),
        ret,
        args,
        ns_before,
        ns_after,
        state: TaskState {
            user_ns: UserNsInfo {
                inum: ns_before.inum[0],
                level: 0,
                owner: 0,
                parent: 0,
            },
            nr_threads: 1,
            ..TaskState::default()
        },
        ..SyscallRecord::zeroed()
    };
    for (slot, s) in strs.iter().enumerate() {
        rec.strs[slot][..s.len()].copy_from_slice(s);
        rec.str_len[slot] = s.len() as i32 + 1;
    }
    bytes_of(&rec)
}

/// One round of `nstrace-bench ns` in child `pid`, as kernel records.
fn ns_round(parent: u32, pid: u32, round: u32, ts: &mut u64) -> Vec<Vec<u8>> {
    let mut tick = || {
        *ts += 10_000;
        *ts
    };
    let mut inside = HOST;
    inside.inum[0] = 4026540000 + 2 * round;
    inside.inum[1] = 4026540001 + 2 * round;
    let fork = ForkRecord {
        header: header(RecordKind::Fork, tick(), parent),
        child_pid: pid,
        child_tid: pid,
        child_ns: HOST,
    };
    let newuser_newns = (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64;
    let ms_rec_private = libc::MS_REC | libc::MS_PRIVATE;
    let cap = CapRecord {
        header: header(RecordKind::Cap, tick(), pid),
        ..cap_template(inside)
    };
    let exit = ExitRecord {
        header: header(RecordKind::Exit, tick(), pid),
        ppid: parent,
        exit_code: 0,
    };
    vec![
        bytes_of(&fork),
        syscall(
            "unshare",
            tick(),
            pid,
            0,
            [newuser_newns, 0, 0, 0, 0, 0],
            &[],
            HOST,
            inside,
        ),
        syscall(
            "mount",
            tick(),
            pid,
            0,
            [0x1000, 0x2000, 0, ms_rec_private, 0, 0],
            &[b"none", b"/"],
            inside,
            inside,
        ),
        syscall(
            "mount",
            tick(),
            pid,
            0,
            [0x1000, 0x2000, 0x3000, 0, 0, 0],
            &[b"none", b"/tmp", b"tmpfs"],
            inside,
            inside,
        ),
        bytes_of(&cap),
        syscall(
            "mount",
            tick(),
            pid,
            -libc::EPERM as i64,
            [0x1000, 0x2000, 0x3000, 0, 0, 0],
            &[b"proc", b"/proc", b"proc"],
            inside,
            inside,
        ),
        syscall(
            "umount2",
            tick(),
            pid,
            0,
            [0x2000, 0, 0, 0, 0, 0],
            &[b"/tmp"],
            inside,
            inside,
        ),
        bytes_of(&exit),
    ]
}

fn cap_template(ns: NsIds) -> CapRecord {
    // SAFETY: CapRecord is plain data; all-zero is valid.
    let mut cap: CapRecord = unsafe { std::mem::zeroed() };
    cap.cap = 21; // CAP_SYS_ADMIN
    cap.ret = 0;
    cap.target = UserNsInfo {
        inum: ns.inum[0],
        level: 1,
        owner: 0,
        parent: HOST.inum[0],
    };
    cap.cred_ns = cap.target;
    cap
}

fn ns_stream(rounds: u32) -> Vec<Vec<u8>> {
    let mut ts = 1_000_000;
    (0..rounds)
        .flat_map(|r| ns_round(1000, 2000 + r, r, &mut ts))
        .collect()
}

fn storm_stream(n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            syscall(
                "umount2",
                1_000_000 + u64::from(i) * 1_000,
                1000,
                -libc::ENOENT as i64,
                [0x2000, 0, 0, 0, 0, 0],
                &[b"/nonexistent/nstrace-bench"],
                HOST,
                HOST,
            )
        })
        .collect()
}

/// Runs every record through the pipeline; returns the events written.
fn pipeline(records: &[Vec<u8>]) -> u64 {
    let hooks = Hooks {
        cap: true,
        klog: true,
        cap_via: Some("tracepoint"),
        syscalls_via: Some("syscall_events"),
    };
    let mut decoder = Decoder::new();
    let mut model = Model::new();
    let mut explainer = Explainer::new(hooks);
    let mut sink = NdjsonSink::new(io::sink());
    let mut batch: Vec<Event> = Vec::new();
    let mut written = 0;
    for rec in records {
        batch.clear();
        if decoder.decode(rec, &mut batch).is_err() {
            continue;
        }
        for ev in batch.drain(..) {
            let mut ann = model.apply(ev);
            ann.explanation = explainer.observe(&ann, &model);
            if sink.event(&ann).is_ok() {
                written += 1;
            }
        }
    }
    let _ = sink.flush();
    written
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    for (name, records) in [
        ("ns-rounds", ns_stream(2_000)),
        ("umount-storm", storm_stream(16_000)),
    ] {
        let events = pipeline(&records);
        group.throughput(Throughput::Elements(events));
        group.bench_function(name, |b| {
            b.iter(|| black_box(pipeline(black_box(&records))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
