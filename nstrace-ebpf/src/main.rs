//! nstrace's kernel side: capture, filter by tracked process, emit fixed-size
//! records. Everything that needs judgement (names, decoding, pairing with
//! other events) happens in userspace.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so `AtomicI64::fetch_add` does not
// exist there; the intrinsic lowers to BPF's atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
        bpf_probe_read_user_str,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{ring_buf::RingBufEntry, Array, HashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext,
};
use nstrace_common::{
    ns, role, tracked, ArgSpec, CapRecord, Config, ExecRecord, ExitRecord, ForkRecord, Header,
    IdMap, KlogRecord, MountProbe, MountWalk, NsIds, RecordKind, RootState, Span, SyscallRecord,
    TaskState, UserNsInfo, WalkRecord, WalkedMount, ARGV_LEN, BLOB_LEN, BPF_F_MMAPABLE, KLOG_LEN,
    MAX_SYSCALL_NR, MNT_SHARED, MOUNT_PROBE_SLOTS, NO_OFFSET, NSFS_MAGIC, PATH_LEN, SMALL_SPAN_MAX,
    SPAN_MAX, STR_LEN, STR_SLOTS, SYSCALL_NO_ENTRY, SYSCALL_NS_UNCHANGED, SYSCALL_NS_WALKED,
    T_SHARED, WALK_MOUNTS, WALK_REQUEST,
};

/// Settings and kernel offsets; userspace fills the one entry before attaching.
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Records for userspace. The size is set by userspace at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Thread-group ids being traced.
#[map]
static TRACKED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Roles of programs by `comm` (container runtimes and engine clients).
#[map]
static PROGRAMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(64, 0);

/// Number of live tracked client processes.
#[map]
static CLIENTS: Array<i64> = Array::with_max_entries(1, 0);

/// Syscall records between entry and exit, by thread id.
#[map]
static PENDING: HashMap<u32, SyscallRecord> = HashMap::with_max_entries(2048, 0);

/// Per-CPU scratch space to build a syscall record in (too big for the stack).
#[map]
static SCRATCH: PerCpuArray<SyscallRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU count of records that could not be emitted and are not yet
/// reported in a later record's `lost_before`.
#[map]
static LOST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The kernel's view of mounts nstrace holds fds to, by fd number; nstrace
/// maps it into its memory and reads the answers without a syscall.
#[map]
static MOUNT_PROBE: Array<MountProbe> = Array::with_max_entries(MOUNT_PROBE_SLOTS, BPF_F_MMAPABLE);

/// Every mount of the namespace nstrace last asked about; nstrace maps it
/// into its memory like MOUNT_PROBE.
#[map]
static MOUNT_WALK: Array<MountWalk> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// How to capture each syscall's arguments, indexed by syscall number.
#[map]
static ARG_SPECS: Array<ArgSpec> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// The configuration (in map memory: read in place, never copied to the stack).
#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// A zero the compiler cannot see through: arrays of it are stored element
/// by element instead of becoming a call to memset. No program here may
/// make a BPF-to-BPF call: with one, 6.1's verifier gives up precision
/// tracking for the whole program and exceeds its million-instruction budget.
#[inline(always)]
fn opaque_zero() -> u64 {
    core::hint::black_box(0)
}

/// Reads a `T` at `base + off` in kernel memory; zero if either is unknown
/// or the read faults. Without a branch on the result: older verifiers
/// (6.1) keep "read" and "zero" apart as two states, and a program with
/// dozens of reads then exceeds their million-instruction budget.
#[inline(always)]
fn kread0<T: Copy>(base: u64, off: u32) -> T {
    let addr = if base == 0 || off == NO_OFFSET {
        0
    } else {
        base + off as u64
    };
    kread_at(addr)
}

/// Reads a `T` at `addr` in kernel memory; zero if the read faults (as it
/// does near address 0). Without any branch: in a loop, where the verifier
/// follows each step apart, every branch multiplies the states it keeps.
#[inline(always)]
fn kread_at<T: Copy>(addr: u64) -> T {
    // Not `zeroed()`: for a bigger T that is a call to memset, and no
    // program may make a call (see `opaque_zero`).
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source address and zeroes the
    // destination when the read fails (a read of address 0 always does).
    unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const _,
        );
        v.assume_init()
    }
}

/// Words of a [`read_span`] copy of up to [`SPAN_MAX`] bytes.
const SPAN_WORDS: usize = (SPAN_MAX / 8) as usize;
/// Words of a copy of up to [`SMALL_SPAN_MAX`] bytes.
const SMALL_SPAN_WORDS: usize = (SMALL_SPAN_MAX / 8) as usize;

/// Copies `span` of the struct at `base` with one read into `N` words
/// (a power of two): the neighbouring fields a program needs, as one
/// helper call instead of one each. Zeros where either is unknown or the
/// read faults; the second value is 0 if the read faulted (as it does for
/// an unknown `base`), else 1 (an empty span reads nothing and succeeds).
/// Bytes past `span.len` keep their zeros: only fields inside the span are
/// taken out.
#[inline(always)]
fn read_span<const N: usize>(base: u64, span: &Span) -> ([u64; N], u64) {
    let z = opaque_zero();
    let mut block = [z; N];
    let addr = if base == 0 || span.start == NO_OFFSET {
        0
    } else {
        base + span.start as u64
    };
    let max = (N * 8) as u32;
    let len = if span.len > max { max } else { span.len };
    // SAFETY: at most N words into the block; the helper checks the source
    // and zeroes what it could not read.
    let ret = unsafe { bpf_probe_read_kernel(block.as_mut_ptr().cast(), len, addr as *const _) };
    (block, 1 ^ nonzero(ret as u64))
}

/// The `i`th 4-byte word of `block` (masked into it).
#[inline(always)]
fn block_u32<const N: usize>(block: &[u64; N], i: u32) -> u32 {
    let w = block[(i as usize / 2) & (N - 1)];
    // The word's first four bytes in memory are its low half on a
    // little-endian machine, its high half on a big-endian one.
    let first_half_shift = if cfg!(target_endian = "big") { 32 } else { 0 };
    (w >> (((i & 1) * 32) ^ first_half_shift)) as u32
}

/// The `u32` at byte `off` of the struct whose `span` is in `block`; zero
/// if `off` is unknown. Userspace made the span hold every known field.
#[inline(always)]
fn span_u32<const N: usize>(block: &[u64; N], span: &Span, off: u32) -> u32 {
    if off == NO_OFFSET {
        return 0;
    }
    block_u32(block, off.wrapping_sub(span.start) / 4)
}

/// The `u64` at byte `off` (4-byte aligned) of the struct whose `span` is
/// in `block`; zero if `off` is unknown.
#[inline(always)]
fn span_u64<const N: usize>(block: &[u64; N], span: &Span, off: u32) -> u64 {
    if off == NO_OFFSET {
        return 0;
    }
    let i = off.wrapping_sub(span.start) / 4;
    // SAFETY: two u32s in memory order are the u64 stored there.
    unsafe { core::mem::transmute::<[u32; 2], u64>([block_u32(block, i), block_u32(block, i + 1)]) }
}

/// `base + off` read from kernel memory, `None` when it cannot be.
#[inline(always)]
fn kread<T: Copy>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == NO_OFFSET {
        return None;
    }
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper checks the source address; the destination is ours.
    let ret = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const _,
        )
    };
    if ret == 0 {
        // SAFETY: the helper filled it.
        Some(unsafe { v.assume_init() })
    } else {
        None
    }
}

#[inline(always)]
fn current_ids() -> (u32, u32) {
    // SAFETY: plain helper call.
    let id = unsafe { bpf_get_current_pid_tgid() };
    ((id >> 32) as u32, id as u32)
}

#[inline(always)]
fn is_tracked(cfg: &Config, pid: u32) -> bool {
    // SAFETY: value read only for presence.
    cfg.trace_all != 0 || unsafe { TRACKED.get(pid) }.is_some()
}

/// The task's own (active) pid namespace: thread_pid->numbers[thread_pid->level].ns.
#[inline(always)]
fn active_pid_ns(cfg: &Config, task: u64) -> u64 {
    let o = &cfg.offsets;
    let pid: u64 = kread0(task, o.task_thread_pid);
    if pid == 0 || o.upid_size == NO_OFFSET || o.pid_numbers == NO_OFFSET {
        return 0;
    }
    let level: u32 = kread0(pid, o.pid_level);
    let upid = pid + o.pid_numbers as u64 + (level as u64 & 0x3f) * o.upid_size as u64;
    kread0(upid, o.upid_ns)
}

/// Level, owner and parent of the user namespace at `ns`, whose inode
/// number `inum` the caller has read.
#[inline(always)]
fn read_userns(cfg: &Config, ns: u64, inum: u32) -> UserNsInfo {
    let o = &cfg.offsets;
    let s = &o.userns_span;
    let (b, _) = read_span::<SMALL_SPAN_WORDS>(ns, s);
    UserNsInfo {
        inum,
        level: span_u32(&b, s, o.userns_level),
        owner: span_u32(&b, s, o.userns_owner),
        parent: kread0(span_u64(&b, s, o.userns_parent), o.ns_inum[ns::USER]),
    }
}

/// [`read_userns`] of a namespace whose inode number is not known yet.
#[inline(always)]
fn read_userns_at(cfg: &Config, ns: u64) -> UserNsInfo {
    read_userns(cfg, ns, kread0(ns, cfg.offsets.ns_inum[ns::USER]))
}

/// Inode of the user namespace that owns the namespace at `ns` (whose
/// `user_ns` field is at `field`). Most namespaces belong to the caller's
/// own user namespace, whose inode `t` holds: then the read is skipped
/// (without a branch: its address becomes 0, which the helper refuses
/// at once).
#[inline(always)]
fn owner_inum(cfg: &Config, t: &TaskPtrs, ns: u64, field: u32) -> u32 {
    let owner: u64 = kread0(ns, field);
    let other = nonzero(owner ^ t.user_ns);
    let read: u32 = kread0(owner * other, cfg.offsets.ns_inum[ns::USER]);
    read | (t.user_inum & (other as u32).wrapping_sub(1))
}

/// Copies the inline extents of the uid_gid_map at `map` (two reads, the
/// extents' span and `nr_extents`, then straight-line extraction: no
/// branches for the verifier to multiply).
#[inline(always)]
fn read_idmap(cfg: &Config, map: u64) -> IdMap {
    let o = &cfg.offsets;
    let z = opaque_zero() as u32;
    let mut out = IdMap {
        nr_extents: u32::MAX,
        lower: [z; 5],
        count: [z; 5],
    };
    let s = &o.idmap_span;
    if map == 0
        || s.start == NO_OFFSET
        || o.idmap_extent_size == NO_OFFSET
        || o.idmap_extent_size > 16
    {
        return out;
    }
    let (raw, ok) = read_span::<SPAN_WORDS>(map, s);
    let Some(nr) = kread::<u32>(map, o.idmap_nr_extents) else {
        return out;
    };
    if ok == 0 {
        return out;
    }
    let stride = o.idmap_extent_size / 4;
    let first = o.idmap_extent.wrapping_sub(s.start) / 4;
    let (lo, cnt) = (o.extent_lower_first / 4, o.extent_count / 4);
    out.nr_extents = nr;
    let mut i = 0u32;
    while i < 5 {
        out.lower[i as usize] = block_u32(&raw, first + i * stride + lo);
        out.count[i as usize] = block_u32(&raw, first + i * stride + cnt);
        i += 1;
    }
    out
}

/// What [`read_state`] starts from, read by [`read_ns`] on its way: kernel
/// reads are most of what the syscall programs cost.
struct TaskPtrs {
    task: u64,
    cred: u64,
    user_ns: u64,
    /// Inode number of `user_ns`.
    user_inum: u32,
    /// The task's active pid namespace (not its nsproxy's for-children one).
    pid_ns: u64,
    mnt_ns: u64,
    net_ns: u64,
}

/// Fills `out` with what explanations need to know about the task.
#[inline(always)]
fn read_state(cfg: &Config, t: &TaskPtrs, out: *mut TaskState) {
    let o = &cfg.offsets;
    let signal: u64 = kread0(t.task, o.task_signal);
    let (mnt_ns, net_ns) = (t.mnt_ns, t.net_ns);
    let (ids, _) = read_span::<SMALL_SPAN_WORDS>(t.cred, &o.cred_ids_span);
    // SAFETY: `out` points into a map value or scratch slot.
    unsafe {
        addr_of_mut!((*out).user_ns).write(read_userns(cfg, t.user_ns, t.user_inum));
        addr_of_mut!((*out).euid).write(span_u32(&ids, &o.cred_ids_span, o.cred_euid));
        addr_of_mut!((*out).nr_threads).write(kread0(signal, o.signal_nr_threads));
        addr_of_mut!((*out).seccomp_mode).write(kread0(t.task, o.task_seccomp_mode));
        addr_of_mut!((*out).pidns_level).write(kread0(t.pid_ns, o.pidns_level));
        addr_of_mut!((*out).mntns_owner).write(owner_inum(cfg, t, mnt_ns, o.mntns_user_ns));
        addr_of_mut!((*out).pidns_owner).write(owner_inum(cfg, t, t.pid_ns, o.pidns_user_ns));
        addr_of_mut!((*out).netns_owner).write(owner_inum(cfg, t, net_ns, o.netns_user_ns));
        addr_of_mut!((*out).egid).write(span_u32(&ids, &o.cred_ids_span, o.cred_egid));
        let map_at = |off: u32| {
            if off == NO_OFFSET || t.user_ns == 0 {
                0
            } else {
                t.user_ns + off as u64
            }
        };
        addr_of_mut!((*out).uid_map).write(read_idmap(cfg, map_at(o.userns_uid_map)));
        addr_of_mut!((*out).gid_map).write(read_idmap(cfg, map_at(o.userns_gid_map)));
        addr_of_mut!((*out).root).write(read_root(cfg, t.task, mnt_ns));
    }
}

/// How far [`read_root`] walks up from the root's mount towards the
/// namespace's root mount.
const ROOT_WALK: u32 = 8;

/// The task's root directory against its mount namespace's root (the inputs
/// of the kernel's `current_chrooted()`).
#[inline(always)]
fn read_root(cfg: &Config, task: u64, mnt_ns: u64) -> RootState {
    let o = &cfg.offsets;
    let fs: u64 = kread0(task, o.task_fs);
    let (root, _) = read_span::<SMALL_SPAN_WORDS>(fs, &o.fs_root_span);
    let vfs = span_u64(&root, &o.fs_root_span, o.fs_root_mnt);
    let dentry = span_u64(&root, &o.fs_root_span, o.fs_root_dentry);
    let ns_root: u64 = kread0(mnt_ns, o.mntns_root);
    if vfs == 0 || dentry == 0 || ns_root == 0 || o.mount_mnt == NO_OFFSET {
        return RootState::default();
    }
    let mnt_root: u64 = kread0(vfs, o.vfsmount_root);
    let d_flags: u32 = kread0(dentry, o.dentry_flags);
    let mut m = vfs - o.mount_mnt as u64;
    let mut on_ns_root = 2u8;
    let mut i = 0;
    while i < ROOT_WALK {
        if m == ns_root {
            on_ns_root = 1;
            break;
        }
        let parent: u64 = kread0(m, o.mount_parent);
        let mountpoint: u64 = kread0(m, o.mount_mountpoint);
        let parent_root: u64 = kread0(parent + o.mount_mnt as u64, o.vfsmount_root);
        if parent == 0 || parent == m || mountpoint == 0 || mountpoint != parent_root {
            on_ns_root = 0;
            break;
        }
        m = parent;
        i += 1;
    }
    RootState {
        read: 1,
        at_mount_root: u8::from(mnt_root == dentry),
        on_ns_root,
        overmounted: u8::from(d_flags & o.dcache_mounted != 0),
    }
}

/// The current thread (pid, tid) if syscall `nr` is traced and its process
/// tracked; the bitmap comes first so that other syscalls cost one test.
#[inline(always)]
fn traced_caller(cfg: &Config, nr: u64) -> Option<(u32, u32)> {
    if !cfg.traces_syscall(nr) {
        return None;
    }
    let (pid, tid) = current_ids();
    is_tracked(cfg, pid).then_some((pid, tid))
}

/// Fills `out` with the namespace inode numbers of `task`, and returns
/// the pointers [`read_state`] starts from.
#[inline(always)]
fn read_ns(cfg: &Config, task: u64, out: *mut NsIds) -> TaskPtrs {
    let o = &cfg.offsets;
    let cred: u64 = kread0(task, o.task_real_cred);
    let user_ns: u64 = kread0(cred, o.cred_user_ns);
    let nsproxy: u64 = kread0(task, o.task_nsproxy);
    let user_inum: u32 = kread0(user_ns, o.ns_inum[ns::USER]);
    let pid_ns = active_pid_ns(cfg, task);
    let s = &o.nsproxy_span;
    let (proxy, _) = read_span::<SPAN_WORDS>(nsproxy, s);
    let z = opaque_zero() as u32;
    let mut ids = NsIds {
        inum: [z; ns::COUNT],
    };
    let mut i = 0;
    while i < ns::COUNT {
        if i != ns::USER && i != ns::PID {
            let nsp = span_u64(&proxy, s, o.nsproxy_field[i]);
            ids.inum[i] = kread0(nsp, o.ns_inum[i]);
        }
        i += 1;
    }
    ids.inum[ns::USER] = user_inum;
    ids.inum[ns::PID] = kread0(pid_ns, o.ns_inum[ns::PID]);
    // SAFETY: `out` points into a ring-buffer reservation or map value.
    unsafe { out.write(ids) };
    TaskPtrs {
        task,
        cred,
        user_ns,
        user_inum,
        pid_ns,
        mnt_ns: span_u64(&proxy, s, o.nsproxy_field[ns::MNT]),
        net_ns: span_u64(&proxy, s, o.nsproxy_field[ns::NET]),
    }
}

/// Argument `which` (1-based, as in [`ArgSpec`]); `None` for 0 or out of
/// range. The arguments sit in an 8-wide array so that one masked index
/// needs no bounds check: one branch for the verifier instead of seven.
#[inline(always)]
fn pick(args: &[u64; 8], which: u8) -> Option<u64> {
    if which == 0 || which > 6 {
        return None;
    }
    Some(args[((which - 1) & 7) as usize])
}

#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task() }
}

/// Takes this CPU's count of records not yet reported as lost.
#[inline(always)]
fn take_lost() -> u32 {
    match LOST.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: per-CPU slot, programs do not nest on one CPU here.
            let n = unsafe { *p };
            unsafe { *p = 0 };
            n
        }
        None => 0,
    }
}

/// Gives back a count taken by [`take_lost`] and adds one for the record
/// that could not be emitted.
#[inline(always)]
fn count_lost(taken: u32) {
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: as in take_lost.
        unsafe { *p = (*p).wrapping_add(taken).wrapping_add(1) };
    }
}

/// Reserves a record in the ring buffer, counting a loss if it is full.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count_lost(0);
    }
    entry
}

/// `BPF_RB_NO_WAKEUP`: submit without waking the reader. Waking it costs
/// the traced task an interrupt (irq_work: a self-IPI, which in a VM is an
/// MSR write that exits to the hypervisor, 9% of a namespace benchmark's
/// CPU when every syscall record woke the reader). Most records can wait
/// for the next one that wakes it, or for its 100 ms tick: capability
/// checks (their call's exit follows), forks, exits, successful calls that
/// change no namespace.
const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`, for the records nstrace must act on while the
/// task lives: failed calls (their targets are resolved through the
/// caller), namespace changes (a new mount namespace's table is read),
/// execs (container runtimes). Without flags the kernel wakes the reader
/// only if it has read everything before the record, which is not so after
/// a record submitted with [`NO_WAKEUP`]. Only while the reader sleeps:
/// see [`wake_if_asleep`].
const FORCE_WAKEUP: u64 = 2;
// `wake_flag` adds 1 to NO_WAKEUP for an urgent record.
const _: () = assert!(FORCE_WAKEUP == NO_WAKEUP + 1);

/// 1 if `v` is not zero, else 0, without a branch (BPF has no setcc: a
/// comparison becomes a jump, and on 6.1 every jump here multiplies the
/// states the verifier walks).
#[inline(always)]
fn nonzero(v: u64) -> u64 {
    (v | v.wrapping_neg()) >> 63
}

/// [`FORCE_WAKEUP`] for an urgent record if the reader sleeps, else
/// [`NO_WAKEUP`]: a reader that polls reads it within a fraction of a
/// millisecond, and a wakeup costs the traced task more than all of its
/// records (the self-IPI's MSR write: 40 to 100 us in this VM).
/// (Read from the CONFIG entry the program holds already: a lookup of a
/// map of its own added a null check, and this kernel's verifier (6.18)
/// then walked syscall_exit five times over: 90 ms more start-up.)
#[inline(always)]
fn wake_if_asleep(cfg: &Config, urgent: u64) -> u64 {
    NO_WAKEUP + (urgent & u64::from((cfg.reader_polling & 1) ^ 1))
}

/// [`FORCE_WAKEUP`] if nstrace must see syscall record `rec` at once and
/// sleeps, else [`NO_WAKEUP`]: a failed call, or one that changed the
/// caller's namespaces (unless only into a copy of nstrace's mount
/// namespace that `new_ns_walk` listed). (A clone that gives only its child new namespaces
/// does not count: testing its flags here made 6.1's verifier refuse the
/// program, and such a child usually lives on.) Branch-free, like
/// [`kread0`].
#[inline(always)]
fn wake_flag(cfg: &Config, rec: *const SyscallRecord) -> u64 {
    // SAFETY: `rec` is a complete record (PENDING value or scratch slot).
    unsafe {
        let (before, after) = ((*rec).ns_before.inum, (*rec).ns_after.inum);
        let mut changed = 0u32;
        let mut i = 0;
        while i < before.len() {
            changed |= before[i] ^ after[i];
            i += 1;
        }
        let failed = (*rec).ret as u64 >> 63;
        // A copy of nstrace's namespace listed by `new_ns_walk`: nstrace
        // has what it needs without the process.
        let walked = u64::from(((*rec).flags / SYSCALL_NS_WALKED) & 1);
        wake_if_asleep(cfg, failed | (nonzero(u64::from(changed)) & (walked ^ 1)))
    }
}

/// Fills the header of a reserved record, which carries the losses this
/// CPU has not reported yet.
#[inline(always)]
fn start_header(h: *mut Header, kind: RecordKind, pid: u32, tid: u32) {
    fill_header(h, kind, pid, tid);
    // SAFETY: `h` points into the reservation.
    unsafe { addr_of_mut!((*h).lost_before).write(take_lost()) };
}

#[inline(always)]
fn fill_header(h: *mut Header, kind: RecordKind, pid: u32, tid: u32) {
    // SAFETY: `h` points into a reservation, map value or scratch slot.
    unsafe {
        addr_of_mut!((*h).kind).write(kind as u32);
        addr_of_mut!((*h).lost_before).write(0);
        addr_of_mut!((*h).ts_ns).write(bpf_ktime_get_ns());
        addr_of_mut!((*h).pid).write(pid);
        addr_of_mut!((*h).tid).write(tid);
        bpf_get_current_comm(addr_of_mut!((*h).comm).cast(), 16);
    }
}

/// The `struct file` of the current task's fd `fd` (0 if none).
#[inline(always)]
fn fd_file(cfg: &Config, fd: u64) -> u64 {
    let o = &cfg.offsets;
    let files: u64 = kread0(current_task(), o.task_files);
    let fdt: u64 = kread0(files, o.files_fdt);
    let max: u32 = kread0(fdt, o.fdtable_max_fds);
    if fd >= max as u64 {
        return 0;
    }
    let fds: u64 = kread0(fdt, o.fdtable_fd);
    kread0(fds, (fd * 8) as u32)
}

/// Whether `struct mount` `m` is shared (`IS_MNT_SHARED`).
#[inline(always)]
fn is_shared(cfg: &Config, m: u64) -> bool {
    let o = &cfg.offsets;
    if o.mount_t_flags != NO_OFFSET {
        kread0::<u32>(m, o.mount_t_flags) & T_SHARED != 0
    } else {
        let flags: u32 = kread0(m + o.mount_mnt as u64, o.vfsmount_flags);
        flags & MNT_SHARED != 0
    }
}

/// nstrace's own request: the mount of fd `args[0]` of the current task
/// (files->fdt->fd[n]->f_path.mnt), its id and flags, into the fd's slot
/// of MOUNT_PROBE.
#[inline(always)]
fn probe_mount(cfg: &Config, fd: u64) {
    if fd >= u64::from(MOUNT_PROBE_SLOTS) {
        return;
    }
    let o = &cfg.offsets;
    let file = fd_file(cfg, fd);
    let mnt: u64 = kread0(file, o.file_path_mnt);
    if mnt == 0 || o.mount_mnt == NO_OFFSET {
        return;
    }
    let m = mnt - o.mount_mnt as u64;
    let parent: u64 = kread0(m, o.mount_parent);
    let mnt_ns: u64 = kread0(m, o.mount_ns);
    let dentry: u64 = kread0(file, o.file_path_dentry);
    let root: u64 = kread0(mnt, o.vfsmount_root);
    let probe = MountProbe {
        mnt_id: kread0(m, o.mount_id),
        flags: kread0(mnt, o.vfsmount_flags),
        mnt_ns: kread0(mnt_ns, o.ns_inum[ns::MNT]),
        parent_id: kread0(parent, o.mount_id),
        shared: u8::from(is_shared(cfg, m)),
        parent_shared: u8::from(parent != 0 && is_shared(cfg, parent)),
        at_mount_root: u8::from(dentry != 0 && dentry == root),
        answered: 1,
        _pad: 0,
    };
    if let Some(slot) = MOUNT_PROBE.get_ptr_mut(fd as u32) {
        // SAFETY: a valid element of the array; nstrace reads it only after
        // the syscall that runs this program has returned.
        unsafe { slot.write(probe) };
    }
}

/// Where a walk of a mount tree is (see [`mount_walk`]), between the tail
/// calls that carry it on.
#[derive(Clone, Copy)]
pub struct WalkCursor {
    /// The `struct mount` the walk is at.
    at: u64,
    /// The namespace's root mount, where the walk ends.
    root: u64,
    /// 1: `at`'s subtree is done (leave it); 0: enter its first child.
    leaving: u64,
    /// 1 while a walk is under way.
    active: u64,
}

/// The walk's position, per CPU: a walk runs on one CPU, from the request
/// through its tail calls.
#[map]
static WALK_CURSOR: PerCpuArray<WalkCursor> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: [`mount_walk`] itself, which carries a walk on by tail calls.
#[map]
static WALK_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: [`mount_walk_raw`], which the raw `sys_enter` program hands a
/// walk request to and which carries it on (a program array holds
/// programs of one type only).
#[map]
static WALK_PROGS_RAW: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: [`mount_walk_fentry`], for its tail calls.
#[map]
static WALK_PROGS_FENTRY: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Steps of the walk per run of [`mount_walk`]. The verifier follows each
/// step of a bounded loop apart, and refuses a program whose unexplored
/// branches pile up past 8192: many steps in one program do not load, so
/// the program goes this many steps and tail-calls itself for the next.
/// The kernel allows 32 or 33 tail calls in a row, 2112 steps at least.
const WALK_STEPS_PER_RUN: u32 = 64;

/// nstrace's request to list every mount of the mount namespace of its nsfs
/// fd (`syncfs(fd | WALK_REQUEST)`) into MOUNT_WALK: depth first from the
/// namespace's root mount, as the kernel's `next_mnt` goes. Attached only to
/// `syscalls:sys_enter_syncfs`, so other syscalls never run it (on the raw
/// syscall tracepoints, [`mount_walk_raw`] does the same).
///
/// The tree is read without the kernel's locks, as any tracer reads; the
/// whole walk runs inside the syscall's entry, in one RCU read-side section,
/// so a mount freed meanwhile is still readable memory. A pointer that
/// reads as 0 stops the walk, which is then not `complete`: nstrace asks
/// about the rest mount by mount.
#[tracepoint]
pub fn mount_walk(ctx: TracePointContext) -> i32 {
    walk_run(&ctx, &WALK_PROGS, || tp_u64(&ctx, TP_ARGS))
}

/// [`mount_walk`] for the raw syscall tracepoints: the raw `sys_enter`
/// program tail-calls it for nstrace's walk requests only, so that no other
/// syscall pays for it.
#[raw_tracepoint]
pub fn mount_walk_raw(ctx: RawTracePointContext) -> i32 {
    walk_run(&ctx, &WALK_PROGS_RAW, || {
        let regs: u64 = ctx.arg(0);
        config().map_or(0, |cfg| kread0(regs, cfg.offsets.regs_arg[0]))
    })
}

/// [`mount_walk`] for the trampolines: fentry of the syscall function of
/// `syncfs` (`__x64_sys_syncfs(const struct pt_regs *)` on x86-64; userspace
/// names it at load), so that no other syscall pays for it.
#[fentry]
pub fn mount_walk_fentry(ctx: FEntryContext) -> i32 {
    walk_run(&ctx, &WALK_PROGS_FENTRY, || {
        let regs: u64 = ctx.arg(0);
        config().map_or(0, |cfg| kread0(regs, cfg.offsets.regs_arg[0]))
    })
}

/// A walk of a new mount namespace, per CPU: the cursor, and the thread it
/// is for. A walk goes on by tail calls within one run of the syscall
/// exit's programs; a cursor left active by another thread (one preempted
/// mid-walk, on a preemptible kernel) is not resumed but dropped.
#[derive(Clone, Copy)]
pub struct NewNsCursor {
    cursor: WalkCursor,
    tid: u64,
}

/// [`new_ns_walk`]'s cursor, per CPU.
#[map]
static NEW_NS_CURSOR: PerCpuArray<NewNsCursor> = PerCpuArray::with_max_entries(1, 0);

/// [`new_ns_walk`]'s record, built per CPU and sent cut to its mounts.
#[map]
static NEW_NS_WALK: PerCpuArray<WalkRecord> = PerCpuArray::with_max_entries(1, 0);

/// Slot 0: [`new_ns_walk`] itself, for its tail calls.
#[map]
static NEW_NS_WALK_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `syscalls:sys_exit_unshare`, attached before [`syscall_exit`]: when a
/// traced unshare(2) made a mount namespace, lists the new namespace's
/// mounts (id, flags, and the dentries that pair each with the mount it
/// was copied from) as the kernel made them, into a [`WalkRecord`] sent
/// ahead of the call's own record. nstrace then builds the new table from
/// the source's without racing the namespace's processes for it. The same
/// walk as [`mount_walk`], over as many runs (tail calls).
#[tracepoint]
pub fn new_ns_walk(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let (Some(state), Some(rec)) = (NEW_NS_CURSOR.get_ptr_mut(0), NEW_NS_WALK.get_ptr_mut(0))
    else {
        return 0;
    };
    let (pid, tid) = current_ids();
    // SAFETY: this CPU's elements of NEW_NS_CURSOR and NEW_NS_WALK.
    let (cur, out) = unsafe { (addr_of_mut!((*state).cursor), addr_of_mut!((*rec).walk)) };
    // SAFETY: as above.
    let resumed = unsafe { (*cur).active != 0 && (*state).tid == u64::from(tid) };
    if !resumed {
        // SAFETY: as above.
        unsafe { addr_of_mut!((*cur).active).write(0) };
        if !new_ns_walk_start(cfg, &ctx, rec, pid, tid) {
            return 0;
        }
        // SAFETY: as above.
        unsafe { addr_of_mut!((*state).tid).write(u64::from(tid)) };
    }
    let complete = match walk_steps(cfg, cur, out) {
        Some(complete) => complete,
        None => {
            // SAFETY: a tail call into this same program, which carries on
            // from the cursor; it returns only if it could not be made.
            unsafe { NEW_NS_WALK_PROGS.tail_call(&ctx, 0) };
            0
        }
    };
    new_ns_walk_end(cfg, cur, rec, complete);
    0
}

/// Starts [`new_ns_walk`]'s walk if the exit is of a traced unshare(2)
/// that succeeded and asked for CLONE_NEWNS (its flags are in the entry's
/// pending record): the caller's mount namespace is the new one.
#[inline(always)]
fn new_ns_walk_start(
    cfg: &Config,
    ctx: &TracePointContext,
    rec: *mut WalkRecord,
    pid: u32,
    tid: u32,
) -> bool {
    if tp_u64(ctx, TP_ARGS) != 0 || traced_caller(cfg, tp_nr(ctx)).is_none() {
        return false;
    }
    // SAFETY: a plain lookup; the entry's record is read in place.
    let flags = match unsafe { PENDING.get(tid) } {
        Some(pending) => pending.args[0],
        None => return false,
    };
    if flags & u64::from(CLONE_NEWNS) == 0 || !walk_offsets_known(cfg) {
        return false;
    }
    let o = &cfg.offsets;
    let nsproxy: u64 = kread0(current_task(), o.task_nsproxy);
    let mnt_ns: u64 = kread0(nsproxy, o.nsproxy_field[ns::MNT]);
    // SAFETY: `rec` is this CPU's NEW_NS_WALK element.
    unsafe {
        fill_header(addr_of_mut!((*rec).header), RecordKind::Walk, pid, tid);
        addr_of_mut!((*rec).walk.count).write(0);
        addr_of_mut!((*rec).walk.answered).write(1);
        let state = NEW_NS_CURSOR.get_ptr_mut(0);
        match state {
            Some(state) => walk_begin(
                cfg,
                mnt_ns,
                addr_of_mut!((*state).cursor),
                addr_of_mut!((*rec).walk),
            ),
            None => false,
        }
    }
}

/// Ends [`new_ns_walk`]'s walk: sends the record, cut after its mounts.
/// A record the ring cannot take is dropped, not counted as lost: it is
/// no event, and nstrace reads the namespace's table itself without it.
/// A complete list of a copy of nstrace's own namespace marks the call's
/// pending record [`SYSCALL_NS_WALKED`].
#[inline(always)]
fn new_ns_walk_end(cfg: &Config, cur: *mut WalkCursor, rec: *mut WalkRecord, complete: u32) {
    // SAFETY: this CPU's elements of NEW_NS_CURSOR and NEW_NS_WALK.
    unsafe {
        addr_of_mut!((*cur).active).write(0);
        addr_of_mut!((*rec).walk.complete).write(complete);
        let count = core::ptr::read_volatile(addr_of_mut!((*rec).walk.count));
        let len = WalkRecord::size_for(count.min(WALK_MOUNTS));
        if len > core::mem::size_of::<WalkRecord>() {
            return;
        }
        let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), len);
        if EVENTS.output::<[u8]>(bytes, NO_WAKEUP).is_err() || complete == 0 {
            return;
        }
        if let Some(pending) = PENDING.get_ptr_mut((*rec).header.tid) {
            if (*pending).ns_before.inum[ns::MNT] == cfg.own_mnt_ns && cfg.own_mnt_ns != 0 {
                (*pending).flags |= SYSCALL_NS_WALKED;
            }
        }
    }
}

/// One run of the walk: starts it on a request (`fd` yields the syscall's
/// first argument), goes up to [`WALK_STEPS_PER_RUN`] steps, and carries on
/// by a tail call into slot 0 of `progs` (this same program).
#[inline(always)]
fn walk_run<C: EbpfContext>(ctx: &C, progs: &ProgramArray, fd: impl FnOnce() -> u64) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    if current_ids().0 != cfg.self_pid {
        return 0;
    }
    let (Some(cur), Some(out)) = (WALK_CURSOR.get_ptr_mut(0), MOUNT_WALK.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: `cur` is this CPU's element of WALK_CURSOR.
    if unsafe { (*cur).active } == 0 {
        let fd = fd();
        if fd & WALK_REQUEST == 0 {
            return 0;
        }
        if !walk_start(cfg, fd & !WALK_REQUEST, cur, out) {
            walk_end(cur, out, 0);
            return 0;
        }
    }
    match walk_steps(cfg, cur, out) {
        Some(complete) => walk_end(cur, out, complete),
        None => {
            // SAFETY: a tail call into this same program, which carries on
            // from the cursor; it returns only if it could not be made (the
            // limit of tail calls in a row), and the walk then ends there.
            unsafe { progs.tail_call(ctx, 0) };
            walk_end(cur, out, 0);
        }
    }
    0
}

/// Starts a walk of the mount namespace of nsfs fd `fd`: the namespace's id
/// and root mount, listed first. False if `fd` is no mount namespace's file.
#[inline(always)]
fn walk_start(cfg: &Config, fd: u64, cur: *mut WalkCursor, out: *mut MountWalk) -> bool {
    let o = &cfg.offsets;
    // SAFETY: `out` is MOUNT_WALK's element; nstrace reads it only after
    // the syscall that runs this returned. Cleared first: a refused request
    // must not leave an earlier walk's list to be taken for its answer.
    unsafe {
        addr_of_mut!((*out).mnt_ns).write(0);
        addr_of_mut!((*out).count).write(0);
    }
    if !walk_offsets_known(cfg) {
        return false;
    }
    let inode: u64 = kread0(fd_file(cfg, fd), o.file_inode);
    let sb: u64 = kread0(inode, o.inode_sb);
    let ns_common: u64 = kread0(inode, o.inode_private);
    if kread0::<u32>(sb, o.sb_magic) != NSFS_MAGIC
        || ns_common == 0
        || ns_type_of(cfg, ns_common) != CLONE_NEWNS
    {
        return false;
    }
    walk_begin(cfg, ns_common - o.mntns_ns as u64, cur, out)
}

/// Starts a walk of `struct mnt_namespace` `mnt_ns` from its root mount,
/// which is listed first. The caller checked the walk's offsets.
#[inline(always)]
fn walk_begin(cfg: &Config, mnt_ns: u64, cur: *mut WalkCursor, out: *mut MountWalk) -> bool {
    let o = &cfg.offsets;
    let root: u64 = kread0(mnt_ns, o.mntns_root);
    // SAFETY: `out` is a walk's list (MOUNT_WALK's element, or this CPU's
    // NEW_NS_WALK record); `cur` is this CPU's cursor.
    unsafe {
        addr_of_mut!((*out).mnt_ns).write(kread0(mnt_ns, o.ns_inum[ns::MNT]));
        cur.write(WalkCursor {
            at: root,
            root,
            leaving: 0,
            active: 1,
        });
    }
    root != 0 && list_mount(cfg, out, root)
}

/// The offsets a walk reads without checking them (see `kread_at`): all
/// known, or no walk.
#[inline(always)]
fn walk_offsets_known(cfg: &Config) -> bool {
    let o = &cfg.offsets;
    ![
        o.mntns_ns,
        o.mntns_root,
        o.mount_mounts,
        o.mount_child,
        o.mount_parent,
        o.mount_id,
        o.mount_mnt,
        o.vfsmount_flags,
        o.vfsmount_root,
        o.mount_mountpoint,
    ]
    .contains(&NO_OFFSET)
}

/// Ends the walk: answered, and whether it listed every mount.
#[inline(always)]
fn walk_end(cur: *mut WalkCursor, out: *mut MountWalk, complete: u32) {
    // SAFETY: as in `walk_start`.
    unsafe {
        addr_of_mut!((*cur).active).write(0);
        addr_of_mut!((*out).complete).write(complete);
        addr_of_mut!((*out).answered).write(1);
    }
}

/// Up to [`WALK_STEPS_PER_RUN`] steps from the cursor. `Some(1)`: back at
/// the root, every mount listed; `Some(0)`: stopped (the list is full, or a
/// pointer read as 0); `None`: more to go, the cursor saved.
#[inline(always)]
fn walk_steps(cfg: &Config, cur: *mut WalkCursor, out: *mut MountWalk) -> Option<u32> {
    let o = &cfg.offsets;
    // Checked by `walk_start`: none is NO_OFFSET.
    let (mounts_off, child_off, parent_off) = (
        u64::from(o.mount_mounts),
        u64::from(o.mount_child),
        u64::from(o.mount_parent),
    );
    // SAFETY: `cur` is this CPU's cursor.
    let root = unsafe { (*cur).root };
    let mut step = 0;
    while step < WALK_STEPS_PER_RUN {
        step += 1;
        // The position is read from the cursor and written back at each
        // step, as the list's count is: the verifier then reaches the
        // loop's head in one state per step, whichever way the step went,
        // instead of one per combination of values it learned on the way.
        // SAFETY: as above.
        let (mut p, leaving) = unsafe {
            (
                core::ptr::read_volatile(addr_of_mut!((*cur).at)),
                core::ptr::read_volatile(addr_of_mut!((*cur).leaving)),
            )
        };
        if leaving == 0 {
            // mnt_mounts.next: the first child, or the list head itself.
            let first: u64 = kread_at(p + mounts_off);
            if first == 0 {
                return Some(0);
            }
            if first != p + mounts_off {
                p = first - child_off;
                if !list_mount(cfg, out, p) {
                    return Some(0);
                }
                walk_to(cur, p, 0);
                continue;
            }
        }
        if p == root {
            return Some(1);
        }
        let parent: u64 = kread_at(p + parent_off);
        // mnt_child.next: the next sibling, or the parent's list head.
        let next: u64 = kread_at(p + child_off);
        if parent == 0 || next == 0 {
            return Some(0);
        }
        if next == parent + mounts_off {
            walk_to(cur, parent, 1);
        } else {
            p = next - child_off;
            if !list_mount(cfg, out, p) {
                return Some(0);
            }
            walk_to(cur, p, 0);
        }
    }
    None
}

/// Moves the cursor to mount `at`, to enter it (`leaving` 0) or leave it (1).
#[inline(always)]
fn walk_to(cur: *mut WalkCursor, at: u64, leaving: u64) {
    // SAFETY: `cur` is this CPU's cursor.
    unsafe {
        core::ptr::write_volatile(addr_of_mut!((*cur).at), at);
        core::ptr::write_volatile(addr_of_mut!((*cur).leaving), leaving);
    }
}

/// Appends `struct mount` `m` to the walk's list; false if the list is full.
#[inline(always)]
fn list_mount(cfg: &Config, out: *mut MountWalk, m: u64) -> bool {
    let o = &cfg.offsets;
    // The count is read back from map memory, not carried in a register:
    // the verifier then sees one unknown value at each step rather than a
    // state per count it could have.
    // SAFETY: `out` is a walk's list (see `walk_begin`).
    let n = unsafe { core::ptr::read_volatile(addr_of_mut!((*out).count)) };
    if n >= WALK_MOUNTS {
        return false;
    }
    let vfsmount = m + u64::from(o.mount_mnt);
    let parent: u64 = kread_at(m + u64::from(o.mount_parent));
    let entry = WalkedMount {
        mnt_id: kread_at(m + u64::from(o.mount_id)),
        flags: kread_at(vfsmount + u64::from(o.vfsmount_flags)),
        parent_id: kread0(parent, o.mount_id),
        _pad: 0,
        root: kread_at(vfsmount + u64::from(o.vfsmount_root)),
        mountpoint: kread_at(m + u64::from(o.mount_mountpoint)),
    };
    // SAFETY: `n` is below the array's length.
    unsafe {
        addr_of_mut!((*out).mounts)
            .cast::<WalkedMount>()
            .add(n as usize)
            .write(entry);
        addr_of_mut!((*out).count).write(n + 1);
    }
    true
}

/// The type (a CLONE_NEW* value) of the namespace whose `ns_common` is at `ns`.
#[inline(always)]
fn ns_type_of(cfg: &Config, ns: u64) -> u32 {
    let o = &cfg.offsets;
    if o.ns_common_type != NO_OFFSET {
        kread0(ns, o.ns_common_type)
    } else {
        // Before 6.18: the type is in the namespace's operations.
        let ops: u64 = kread0(ns, o.ns_common_ops);
        kread0(ops, o.proc_ns_ops_type)
    }
}

const CLONE_NEWNS: u32 = 0x0002_0000;
const CLONE_NEWPID: u32 = 0x2000_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;

/// Marks the string arguments of a call, as `spec` says, to be read at its
/// exit ([`reread_strings`]): by then the kernel has copied them, so their
/// pages are present. Read here, a string in a page the caller has not
/// touched yet (a literal in a freshly forked child) costs a fault and
/// fails anyway, and a call that never exits is not reported.
// Inlined, like every helper here: a BPF-to-BPF call (a subprogram, even
// memset) makes 6.1's verifier give up precision tracking for the whole
// program, and the program then exceeds its million-instruction budget.
#[inline(always)]
fn capture_strings(spec: &ArgSpec, args: &[u64; 8], rec: *mut SyscallRecord) {
    // SAFETY: `rec` is this CPU's scratch slot; every write stays inside it.
    unsafe {
        let mut s = 0;
        while s < STR_SLOTS {
            let ptr = pick(args, spec.str_args[s]).unwrap_or(0);
            // -EFAULT where there is a string to read, 0 where there is none.
            (*rec).str_len[s] = -14 * nonzero(ptr) as i32;
            s += 1;
        }
    }
}

/// The struct argument of a call (clone_args, mount_attr), as `spec` says.
#[inline(always)]
fn capture_blob(spec: &ArgSpec, args: &[u64; 8], rec: *mut SyscallRecord) {
    // SAFETY: as above.
    unsafe {
        let blob_len = match pick(args, spec.blob_arg) {
            Some(ptr) => {
                let size = pick(args, spec.blob_size_arg).unwrap_or(BLOB_LEN as u64);
                let size = if size > BLOB_LEN as u64 {
                    BLOB_LEN as u32
                } else {
                    size as u32
                };
                if size == 0 {
                    0
                } else {
                    let r = bpf_probe_read_user(
                        addr_of_mut!((*rec).blob).cast(),
                        size,
                        ptr as *const _,
                    );
                    if r < 0 {
                        r as i32
                    } else {
                        size as i32
                    }
                }
            }
            None => 0,
        };
        addr_of_mut!((*rec).blob_len).write(blob_len);
    }
}

/// What the fd argument of a call (setns) refers to: inode, file system,
/// and for an nsfs file the namespace's type and level.
#[inline(always)]
fn identify_fd(cfg: &Config, spec: &ArgSpec, args: &[u64; 8], rec: *mut SyscallRecord) {
    let (mut ino, mut magic, mut ns_type, mut level) = (0u64, 0u32, 0u32, 0u32);
    if let Some(fd) = pick(args, spec.fd_arg) {
        let o = &cfg.offsets;
        let inode: u64 = kread0(fd_file(cfg, fd), o.file_inode);
        let sb: u64 = kread0(inode, o.inode_sb);
        ino = kread0(inode, o.inode_ino);
        magic = kread0(sb, o.sb_magic);
        if magic == NSFS_MAGIC {
            // An nsfs inode's i_private is the namespace's ns_common.
            let ns: u64 = kread0(inode, o.inode_private);
            ns_type = ns_type_of(cfg, ns);
            let (outer, level_off) = match ns_type {
                CLONE_NEWPID => (o.pidns_ns, o.pidns_level),
                CLONE_NEWUSER => (o.userns_ns, o.userns_level),
                _ => (NO_OFFSET, NO_OFFSET),
            };
            if outer != NO_OFFSET && ns != 0 {
                level = kread0(ns - outer as u64, level_off);
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        addr_of_mut!((*rec).fd_ino).write(ino);
        addr_of_mut!((*rec).fd_magic).write(magic);
        addr_of_mut!((*rec).fd_ns_type).write(ns_type);
        addr_of_mut!((*rec).fd_ns_level).write(level);
    }
}

/// What both syscall entry hooks do with a call: `args` yields its six
/// argument registers and is evaluated only for a traced call of a tracked
/// process.
#[inline(always)]
fn on_enter(cfg: &Config, nr: u64, args: impl FnOnce() -> [u64; 6]) {
    if cfg.probe_nr != 0 && nr == cfg.probe_nr as u64 {
        let (pid, _) = current_ids();
        if pid == cfg.self_pid {
            let fd = args()[0];
            // A walk is mount_walk's, attached to syncfs apart.
            if fd & WALK_REQUEST == 0 {
                probe_mount(cfg, fd);
            }
        }
        return;
    }
    let Some((pid, tid)) = traced_caller(cfg, nr) else {
        return;
    };
    let Some(spec) = ARG_SPECS.get(nr as u32) else {
        return;
    };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let a = args();
    // Arguments the call does not take are 0, whatever the hook passed.
    let n = spec.nargs as u64;
    let keep = |i: u64, v: u64| v & 0u64.wrapping_sub(u64::from(i < n));
    // SAFETY: `rec` is this CPU's scratch slot; every write stays inside it.
    unsafe {
        fill_header(addr_of_mut!((*rec).header), RecordKind::Syscall, pid, tid);
        addr_of_mut!((*rec).exit_ts_ns).write(0);
        addr_of_mut!((*rec).nr).write(nr as u32);
        addr_of_mut!((*rec).flags).write(SYSCALL_NS_UNCHANGED * u32::from(spec.ns_unchanged));
        addr_of_mut!((*rec).ret).write(0);
        let z = opaque_zero();
        addr_of_mut!((*rec).cap_repeats).write(z as u32);
        addr_of_mut!((*rec).cap_last_cred).write(z);
        let args: [u64; 8] = [
            keep(0, a[0]),
            keep(1, a[1]),
            keep(2, a[2]),
            keep(3, a[3]),
            keep(4, a[4]),
            keep(5, a[5]),
            z,
            z,
        ];
        addr_of_mut!((*rec).args).write([args[0], args[1], args[2], args[3], args[4], args[5]]);
        let t = read_ns(cfg, current_task(), addr_of_mut!((*rec).ns_before));
        read_state(cfg, &t, addr_of_mut!((*rec).state));
        capture_strings(spec, &args, rec);
        capture_blob(spec, &args, rec);
        identify_fd(cfg, spec, &args, rec);
        // If the table is full the exit is reported without its entry. The
        // record goes by reference: a copy would not fit on the BPF stack.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = PENDING.insert(tid, &*rec, 0);
    }
}

/// `raw_syscalls:sys_enter(struct pt_regs *regs, long id)`: every syscall of
/// the system comes here (the fallback where per-syscall events are missing).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let nr: u64 = ctx.arg(1);
    let regs: u64 = ctx.arg(0);
    let r = &cfg.offsets.regs_arg;
    if cfg.probe_nr != 0
        && nr == u64::from(cfg.probe_nr)
        && current_ids().0 == cfg.self_pid
        && kread0::<u64>(regs, r[0]) & WALK_REQUEST != 0
    {
        // SAFETY: a tail call into mount_walk_raw (where userspace put it);
        // if the slot is empty, the request goes unanswered and nstrace
        // reads the mounts one by one.
        unsafe { WALK_PROGS_RAW.tail_call(&ctx, 0) };
        return 0;
    }
    on_enter(cfg, nr, || regs_args(cfg, regs));
    0
}

/// The six argument registers of a syscall, from the caller's saved
/// registers `regs` (the raw tracepoint's and the trampolines' argument).
#[inline(always)]
fn regs_args(cfg: &Config, regs: u64) -> [u64; 6] {
    let r = &cfg.offsets.regs_arg;
    [
        kread0(regs, r[0]),
        kread0(regs, r[1]),
        kread0(regs, r[2]),
        kread0(regs, r[3]),
        kread0(regs, r[4]),
        kread0(regs, r[5]),
    ]
}

/// Byte offset of `__syscall_nr` in a syscall trace event's record (after
/// the 8-byte `struct trace_entry`); userspace checks it in tracefs.
const TP_NR: usize = 8;
/// Byte offset of `args[0]` (sys_enter_*) and of `ret` (sys_exit_*).
const TP_ARGS: u32 = 16;

/// Reads the `u64` at byte `off` of a syscall trace event record. Through
/// bpf_probe_read_kernel, not a direct load: the kernel refuses to attach a
/// program to an event shorter than the furthest byte it loads directly, and
/// a call with fewer than six arguments has a shorter event. (The record is
/// built on the kernel stack with room for six; those past the call's own
/// are left uninitialised, and dropped by `on_enter`.)
#[inline(always)]
fn tp_u64(ctx: &TracePointContext, off: u32) -> u64 {
    kread0(ctx.as_ptr() as u64, off)
}

/// The syscall number of a trace event record.
#[inline(always)]
fn tp_nr(ctx: &TracePointContext) -> u64 {
    // SAFETY: `__syscall_nr` is an int at TP_NR. The kernel fires no
    // event for a negative one; zero-extended, it stays one value for the
    // verifier's bounds.
    let nr = unsafe { ctx.as_ptr().cast::<u8>().add(TP_NR).cast::<u32>().read() };
    u64::from(nr)
}

/// `syscalls:sys_enter_NAME`, attached to each traced syscall's own event:
/// syscalls nstrace does not trace run no program at all.
#[tracepoint]
pub fn syscall_enter(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let nr = tp_nr(&ctx);
    // The six argument slots in one read (see `tp_u64`).
    on_enter(cfg, nr, || kread0(ctx.as_ptr() as u64, TP_ARGS));
    0
}

/// Reads the string arguments marked at entry ([`capture_strings`]): a page
/// not yet touched by the program (a string literal in a fresh binary)
/// cannot be faulted in from a tracepoint, but the syscall itself has
/// copied the string by its exit, so the page is there now.
#[inline(always)]
fn reread_strings(nr: u64, rec: *mut SyscallRecord) {
    let Some(spec) = ARG_SPECS.get(nr as u32) else {
        return;
    };
    // SAFETY: `rec` is a PENDING value; every write stays inside it.
    unsafe {
        let a = (*rec).args;
        let z = opaque_zero();
        let args = [a[0], a[1], a[2], a[3], a[4], a[5], z, z];
        let mut s = 0;
        while s < STR_SLOTS {
            if (*rec).str_len[s] < 0 {
                if let Some(ptr) = pick(&args, spec.str_args[s]) {
                    (*rec).str_len[s] = bpf_probe_read_user_str(
                        addr_of_mut!((*rec).strs[s]).cast(),
                        STR_LEN as u32,
                        ptr as *const _,
                    ) as i32;
                }
            }
            s += 1;
        }
    }
}

/// What both syscall exit hooks do with call `nr` that returned `ret`.
#[inline(always)]
fn on_exit(cfg: &Config, nr: u64, ret: i64) {
    let Some((pid, tid)) = traced_caller(cfg, nr) else {
        return;
    };
    let rec = match PENDING.get_ptr_mut(tid) {
        Some(rec) => {
            reread_strings(nr, rec);
            rec
        }
        None => {
            let Some(spec) = ARG_SPECS.get(nr as u32) else {
                return;
            };
            if ret == 0 && spec.child_returns_zero != 0 {
                // The child side of clone/clone3: the parent reports the call.
                return;
            }
            let Some(rec) = SCRATCH.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: this CPU's scratch slot.
            unsafe {
                fill_header(addr_of_mut!((*rec).header), RecordKind::Syscall, pid, tid);
                addr_of_mut!((*rec).nr).write(nr as u32);
                addr_of_mut!((*rec).flags).write(SYSCALL_NO_ENTRY);
                let z = opaque_zero();
                addr_of_mut!((*rec).args).write([z; 6]);
                addr_of_mut!((*rec).str_len).write([z as i32; STR_SLOTS]);
                addr_of_mut!((*rec).blob_len).write(z as i32);
                addr_of_mut!((*rec).fd_ino).write(z);
                addr_of_mut!((*rec).fd_magic).write(z as u32);
                addr_of_mut!((*rec).fd_ns_type).write(z as u32);
                addr_of_mut!((*rec).fd_ns_level).write(z as u32);
                addr_of_mut!((*rec).cap_repeats).write(z as u32);
                let t = read_ns(cfg, current_task(), addr_of_mut!((*rec).ns_before));
                read_state(cfg, &t, addr_of_mut!((*rec).state));
            }
            rec
        }
    };
    // SAFETY: `rec` is a PENDING value or this CPU's scratch slot.
    unsafe {
        addr_of_mut!((*rec).exit_ts_ns).write(bpf_ktime_get_ns());
        addr_of_mut!((*rec).ret).write(ret);
        // A mount-family call leaves the caller's namespaces as they were:
        // half of a record's kernel reads are saved.
        // (The flag was set at entry: a second ARG_SPECS lookup here made
        // LLVM spill `nr`, and 6.1's verifier lost its bounds.)
        if (*rec).flags & SYSCALL_NS_UNCHANGED != 0 {
            addr_of_mut!((*rec).ns_after).write((*rec).ns_before);
        } else {
            read_ns(cfg, current_task(), addr_of_mut!((*rec).ns_after));
        }
        let lost = take_lost();
        addr_of_mut!((*rec).header.lost_before).write(lost);
        if EVENTS
            .output::<SyscallRecord>(&*rec, wake_flag(cfg, rec))
            .is_err()
        {
            count_lost(lost);
        }
    }
    let _ = PENDING.remove(tid);
}

/// `raw_syscalls:sys_exit(struct pt_regs *regs, long ret)`: every syscall
/// of the system (the fallback where per-syscall events are missing).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let regs: u64 = ctx.arg(0);
    // The number the task asked for, even if seccomp refused the call.
    let Some(nr) = kread::<u64>(regs, cfg.offsets.regs_nr) else {
        return 0;
    };
    on_exit(cfg, nr, ctx.arg(1));
    0
}

/// `syscalls:sys_exit_NAME` of each traced syscall. The kernel fires it for
/// calls seccomp refused too (with the number the task asked for).
#[tracepoint]
pub fn syscall_exit(ctx: TracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    // SAFETY: `ret` is a long at TP_ARGS of every sys_exit_* record (a
    // direct load: they all have it).
    let ret = unsafe {
        ctx.as_ptr()
            .cast::<u8>()
            .add(TP_ARGS as usize)
            .cast::<i64>()
            .read()
    };
    on_exit(cfg, tp_nr(&ctx), ret);
    0
}

/// The syscall function's entry on the trampolines: `regs` is its one
/// argument, the caller's saved registers. The number comes from them
/// too, so that one body serves every syscall.
#[inline(always)]
fn fentry_enter(regs: u64) {
    let Some(cfg) = config() else {
        return;
    };
    let Some(nr) = kread::<u64>(regs, cfg.offsets.regs_nr) else {
        return;
    };
    on_enter(cfg, nr, || regs_args(cfg, regs));
}

/// The syscall function's return on the trampolines.
#[inline(always)]
fn fexit_exit(regs: u64, ret: i64) {
    let Some(cfg) = config() else {
        return;
    };
    let Some(nr) = kread::<u64>(regs, cfg.offsets.regs_nr) else {
        return;
    };
    on_exit(cfg, nr, ret);
}

/// Slot 0: [`sys_fentry_body`], which every `sys_fentry_N` hands over to.
#[map]
static SYS_FENTRY_BODY: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: [`sys_fexit_body`], which every `sys_fexit_N` hands over to.
#[map]
static SYS_FEXIT_BODY: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What every `sys_fentry_N` does: loaded against syncfs's function (any
/// syscall function has the same prototype) and attached to none; the
/// stubs tail-call it with their context (the same one argument), so that
/// the verifier goes through this body once, not once per syscall.
#[fentry]
pub fn sys_fentry_body(ctx: FEntryContext) -> i32 {
    fentry_enter(ctx.arg(0));
    0
}

/// What every `sys_fexit_N` does (see [`sys_fentry_body`]); the return
/// value follows the one argument.
#[fexit]
pub fn sys_fexit_body(ctx: FExitContext) -> i32 {
    fexit_exit(ctx.arg(0), ctx.arg(1));
    0
}

/// fentry and fexit stubs for the syscall functions of the traced calls
/// (`__x64_sys_mount(const struct pt_regs *regs)` and so on), one pair per
/// traced syscall, and the entry stub after them on syncfs's (nstrace's
/// mount probe): a trampoline program is loaded for one function, and
/// userspace says which at load. Only the traced calls run a program;
/// unlike the syscall trace events, no other syscall of the system takes
/// the slower path for them. Calls that seccomp refuses never reach the
/// function, so these do not see them.
macro_rules! syscall_trampolines {
    ($(($enter:ident, $exit:ident)),* $(,)?) => {
        $(
            /// fentry of a traced syscall's function: on to [`sys_fentry_body`].
            #[fentry]
            pub fn $enter(ctx: FEntryContext) -> i32 {
                // SAFETY: a tail call into the body (where userspace put
                // it); with the slot empty the call goes untraced.
                unsafe { SYS_FENTRY_BODY.tail_call(&ctx, 0) };
                0
            }

            /// fexit of a traced syscall's function: on to [`sys_fexit_body`].
            #[fexit]
            pub fn $exit(ctx: FExitContext) -> i32 {
                // SAFETY: as in the fentry stub.
                unsafe { SYS_FEXIT_BODY.tail_call(&ctx, 0) };
                0
            }
        )*
    };
}

syscall_trampolines!(
    (sys_fentry_0, sys_fexit_0),
    (sys_fentry_1, sys_fexit_1),
    (sys_fentry_2, sys_fexit_2),
    (sys_fentry_3, sys_fexit_3),
    (sys_fentry_4, sys_fexit_4),
    (sys_fentry_5, sys_fexit_5),
    (sys_fentry_6, sys_fexit_6),
    (sys_fentry_7, sys_fexit_7),
    (sys_fentry_8, sys_fexit_8),
    (sys_fentry_9, sys_fexit_9),
    (sys_fentry_10, sys_fexit_10),
    (sys_fentry_11, sys_fexit_11),
    (sys_fentry_12, sys_fexit_12),
    (sys_fentry_13, sys_fexit_13),
    (sys_fentry_14, sys_fexit_14),
    (sys_fentry_15, sys_fexit_15),
);

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let o = &cfg.offsets;
    let (pid, tid) = current_ids();
    let child: u64 = ctx.arg(1);
    let child_pid: u32 = kread0(child, o.task_tgid);
    let child_tid: u32 = kread0(child, o.task_pid);
    if child_pid == 0 || child_pid == pid {
        // A new thread: its process is tracked (or not) already.
        return 0;
    }
    let launched = cfg.launcher_pid != 0 && pid == cfg.launcher_pid;
    if !launched && !is_tracked(cfg, pid) {
        return 0;
    }
    if cfg.trace_all == 0 {
        let _ = TRACKED.insert(child_pid, tracked::PROCESS, 0);
    }
    let Some(mut entry) = reserve::<ForkRecord>() else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is the reservation.
    unsafe {
        start_header(addr_of_mut!((*rec).header), RecordKind::Fork, pid, tid);
        addr_of_mut!((*rec).child_pid).write(child_pid);
        addr_of_mut!((*rec).child_tid).write(child_tid);
        read_ns(cfg, child, addr_of_mut!((*rec).child_ns));
    }
    entry.submit(NO_WAKEUP);
    0
}

/// Adds `delta` to the count of live tracked clients.
#[inline(always)]
fn clients_add(delta: i64) {
    if let Some(ptr) = CLIENTS.get_ptr_mut(0) {
        use core::intrinsics::{atomic_xadd, AtomicOrdering};
        // SAFETY: a map value, valid for the program's run; updated atomically.
        unsafe { atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(ptr, delta) };
    }
}

/// Whether a process that just exec'd is traced (`Some(adopted)`), keeping
/// TRACKED and CLIENTS up to date: a tracked process that becomes a
/// container-engine client is counted, and while any is, a container
/// runtime started anywhere becomes tracked (adopted).
#[inline(always)]
fn exec_membership(cfg: &Config, pid: u32) -> Option<bool> {
    if cfg.trace_all != 0 {
        return Some(false);
    }
    let mut comm = core::mem::MaybeUninit::<[u8; 16]>::uninit();
    // SAFETY: the helper fills the 16 bytes (NUL-padded) or fails; aya's
    // wrapper would zero the array first, with a call to memset.
    let role = if unsafe { bpf_get_current_comm(comm.as_mut_ptr().cast(), 16) } == 0 {
        // SAFETY: filled above; plain lookup, the value copied out at once.
        unsafe { PROGRAMS.get(comm.assume_init_ref()) }
            .copied()
            .unwrap_or(0)
    } else {
        0
    };
    // SAFETY: as above.
    match unsafe { TRACKED.get(pid) }.copied() {
        None => {
            let clients = CLIENTS.get(0).copied().unwrap_or(0);
            if cfg.follow_runtimes == 0 || role != role::RUNTIME || clients <= 0 {
                return None;
            }
            let _ = TRACKED.insert(pid, tracked::PROCESS, 0);
            Some(true)
        }
        Some(was) => {
            if role == role::CLIENT && was != tracked::CLIENT {
                let _ = TRACKED.insert(pid, tracked::CLIENT, 0);
                clients_add(1);
            } else if role != role::CLIENT && was == tracked::CLIENT {
                let _ = TRACKED.insert(pid, tracked::PROCESS, 0);
                clients_add(-1);
            }
            Some(false)
        }
    }
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let o = &cfg.offsets;
    let (pid, tid) = current_ids();
    let Some(adopted) = exec_membership(cfg, pid) else {
        return 0;
    };
    let Some(mut entry) = reserve::<ExecRecord>() else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let task = current_task();
    // SAFETY: `rec` is the reservation.
    unsafe {
        start_header(addr_of_mut!((*rec).header), RecordKind::Exec, pid, tid);
        let parent: u64 = kread0(task, o.task_real_parent);
        addr_of_mut!((*rec).ppid).write(kread0(parent, o.task_tgid));
        let old: u64 = ctx.arg(1);
        addr_of_mut!((*rec).old_tid).write(old as u32);
        let bprm: u64 = ctx.arg(2);
        let name: u64 = kread0(bprm, o.binprm_filename);
        let n = bpf_probe_read_kernel_str(
            addr_of_mut!((*rec).filename).cast(),
            PATH_LEN as u32,
            name as *const _,
        );
        addr_of_mut!((*rec).filename_len).write(n as i32);
        let mm: u64 = kread0(task, o.task_mm);
        let start: u64 = kread0(mm, o.mm_arg_start);
        let end: u64 = kread0(mm, o.mm_arg_end);
        let total = end.saturating_sub(start);
        addr_of_mut!((*rec).argv_total).write(total);
        addr_of_mut!((*rec).adopted).write(u32::from(adopted));
        addr_of_mut!((*rec)._pad).write(0);
        let want = if total > (ARGV_LEN - 1) as u64 {
            (ARGV_LEN - 1) as u32
        } else {
            total as u32
        };
        let want = want & (ARGV_LEN as u32 - 1);
        let argv_len = if start == 0 || want == 0 {
            0
        } else {
            let r = bpf_probe_read_user(addr_of_mut!((*rec).argv).cast(), want, start as *const _);
            if r < 0 {
                r as i32
            } else {
                want as i32
            }
        };
        addr_of_mut!((*rec).argv_len).write(argv_len);
        read_ns(cfg, task, addr_of_mut!((*rec).ns));
    }
    entry.submit(wake_if_asleep(cfg, 1));
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let o = &cfg.offsets;
    let (pid, tid) = current_ids();
    if !is_tracked(cfg, pid) {
        return 0;
    }
    // A thread killed inside a traced call never reaches sys_exit.
    let _ = PENDING.remove(tid);
    let task = current_task();
    let signal: u64 = kread0(task, o.task_signal);
    let live: i32 = kread0(signal, o.signal_live);
    if live != 0 {
        // Other threads of the process are still running.
        return 0;
    }
    if cfg.trace_all == 0 {
        // SAFETY: plain lookup; the value is copied out at once.
        if unsafe { TRACKED.get(pid) }.copied() == Some(tracked::CLIENT) {
            clients_add(-1);
        }
        let _ = TRACKED.remove(pid);
    }
    let Some(mut entry) = reserve::<ExitRecord>() else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is the reservation.
    unsafe {
        start_header(addr_of_mut!((*rec).header), RecordKind::Exit, pid, tid);
        let parent: u64 = kread0(task, o.task_real_parent);
        addr_of_mut!((*rec).ppid).write(kread0(parent, o.task_tgid));
        addr_of_mut!((*rec).exit_code).write(kread0(task, o.task_exit_code));
    }
    entry.submit(NO_WAKEUP);
    0
}

/// Emits one capability decision made inside a traced call (others are not
/// a call's), unless it repeats the call's previous one: that is counted in
/// the call's record. A fork checks CAP_SYS_ADMIN once for each writable
/// mapping it copies (memory accounting), the same check each time.
#[inline(always)]
fn emit_cap(cred: u64, target: u64, cap: i32, ret: i32) {
    let Some(cfg) = config() else {
        return;
    };
    let (pid, tid) = current_ids();
    let Some(call) = PENDING.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: `call` is this thread's PENDING value; only this thread
    // writes it.
    unsafe {
        if (*call).cap_last_cred == cred
            && (*call).cap_last_target == target
            && (*call).cap_last == cap
            && (*call).cap_last_ret == ret
        {
            (*call).cap_repeats += 1;
            return;
        }
        (*call).cap_last_cred = cred;
        (*call).cap_last_target = target;
        (*call).cap_last = cap;
        (*call).cap_last_ret = ret;
    }
    let Some(mut entry) = reserve::<CapRecord>() else {
        return;
    };
    let rec = entry.as_mut_ptr();
    let o = &cfg.offsets;
    let cred_ns: u64 = kread0(cred, o.cred_user_ns);
    // SAFETY: `rec` is the reservation.
    unsafe {
        start_header(addr_of_mut!((*rec).header), RecordKind::Cap, pid, tid);
        addr_of_mut!((*rec).cap).write(cap);
        addr_of_mut!((*rec).ret).write(ret);
        let target_ns = read_userns_at(cfg, target);
        addr_of_mut!((*rec).target).write(target_ns);
        // Mostly the same namespace: a check in the caller's own.
        let cred_ns_info = if cred_ns == target {
            target_ns
        } else {
            read_userns_at(cfg, cred_ns)
        };
        addr_of_mut!((*rec).cred_ns).write(cred_ns_info);
        addr_of_mut!((*rec).euid).write(kread0(cred, o.cred_euid));
        addr_of_mut!((*rec)._pad).write(0);
    }
    entry.submit(NO_WAKEUP);
}

/// `cap_capable(const struct cred *cred, struct user_namespace *target_ns,
/// const struct user_namespace *capable_ns, int cap, int ret)`: every
/// capability decision (the tracepoint, 6.18 and later).
#[raw_tracepoint(tracepoint = "cap_capable")]
pub fn cap_capable(ctx: RawTracePointContext) -> i32 {
    let (cred, target, cap, ret): (u64, u64, u64, u64) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(3), ctx.arg(4));
    emit_cap(cred, target, cap as i32, ret as i32);
    0
}

/// fexit of `int cap_capable(const struct cred *cred, struct user_namespace
/// *targ_ns, int cap, unsigned int opts)`: the same decision where the
/// tracepoint does not exist (stock kernels before 6.18). The return value
/// follows the four arguments.
#[fexit(function = "cap_capable")]
pub fn cap_capable_fexit(ctx: FExitContext) -> i32 {
    let (cred, target, cap, ret): (u64, u64, u64, u64) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(4));
    emit_cap(cred, target, cap as i32, ret as i32);
    0
}

/// `cap_capable`'s arguments between its kprobe and kretprobe, by thread.
#[map]
static CAP_ARGS: HashMap<u32, [u64; 3]> = HashMap::with_max_entries(1024, 0);

/// kprobe of `cap_capable`, where trampolines are refused: keeps the
/// arguments for the kretprobe (only for threads inside a traced call).
#[kprobe]
pub fn cap_capable_kprobe(ctx: ProbeContext) -> u32 {
    let (_, tid) = current_ids();
    // SAFETY: presence check only.
    if unsafe { PENDING.get(tid) }.is_none() {
        return 0;
    }
    let args = [
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(2).unwrap_or(0),
    ];
    let _ = CAP_ARGS.insert(tid, args, 0);
    0
}

/// kretprobe of `cap_capable`: the decision, with the kprobe's arguments.
#[kretprobe]
pub fn cap_capable_kretprobe(ctx: RetProbeContext) -> u32 {
    let (_, tid) = current_ids();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { CAP_ARGS.get(tid) }).copied() else {
        return 0;
    };
    let _ = CAP_ARGS.remove(tid);
    let ret: u64 = ctx.ret();
    emit_cap(args[0], args[1], args[2] as i32, ret as i32);
    0
}

/// `console(const char *text, size_t len)`: a kernel log line, in the
/// context of the task that printed it. Only lines printed inside a traced
/// call are kept ("VFS: Mount too revealing").
#[raw_tracepoint(tracepoint = "console")]
pub fn console(ctx: RawTracePointContext) -> i32 {
    let (pid, tid) = current_ids();
    // SAFETY: presence check only.
    if unsafe { PENDING.get(tid) }.is_none() {
        return 0;
    }
    let text: u64 = ctx.arg(0);
    let len: u64 = ctx.arg(1);
    let Some(mut entry) = reserve::<KlogRecord>() else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let n = if len > (KLOG_LEN - 1) as u64 {
        (KLOG_LEN - 1) as u32
    } else {
        len as u32
    };
    let n = n & (KLOG_LEN as u32 - 1);
    // SAFETY: `rec` is the reservation.
    unsafe {
        start_header(addr_of_mut!((*rec).header), RecordKind::Klog, pid, tid);
        let r = if n == 0 {
            0
        } else {
            bpf_probe_read_kernel(addr_of_mut!((*rec).text).cast(), n, text as *const _)
        };
        addr_of_mut!((*rec).len).write(if r < 0 { r as i32 } else { n as i32 });
        addr_of_mut!((*rec)._pad).write(0);
    }
    entry.submit(0);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
