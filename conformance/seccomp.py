"""config-linux.md "Seccomp": the filter is installed, actions (ERRNO with and without errnoRet,
KILL), argument filters, and the errors owed for bad actions and errnoRet misuse."""
from __future__ import annotations

from .framework import MUST, check

CL = "config-linux.md"


def profile(*syscalls, default="SCMP_ACT_ALLOW") -> dict:
    return {"seccomp": {"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                        "syscalls": list(syscalls)}}


# Everything a runtime's init and busybox plausibly call between loading the filter and the
# end of the script — but not mkdir/mkdirat, which must fall to defaultAction.
BROAD_ALLOW = """
read write open openat openat2 close fstat newfstatat stat lstat statx poll ppoll lseek mmap mprotect
munmap brk rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigtimedwait ioctl pread64 pwrite64
readv writev access faccessat faccessat2 pipe pipe2 select pselect6 sched_yield mremap madvise dup dup2
dup3 pause nanosleep clock_nanosleep getitimer setitimer alarm getpid getppid gettid socket connect
sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt
getsockopt clone clone3 fork vfork execve execveat exit exit_group wait4 waitid kill tkill tgkill uname
fcntl flock fsync fdatasync truncate ftruncate getdents getdents64 getcwd chdir fchdir rename renameat
renameat2 rmdir unlink unlinkat link linkat symlink symlinkat readlink readlinkat chmod fchmod fchmodat
chown fchown lchown fchownat umask gettimeofday clock_gettime clock_getres time getrlimit setrlimit
prlimit64 getrusage sysinfo times getuid geteuid getgid getegid setuid setgid setreuid setregid
setresuid setresgid getresuid getresgid getgroups setgroups setpgid getpgid getpgrp setsid getsid
capget capset sigaltstack prctl arch_prctl set_tid_address set_robust_list get_robust_list futex
futex_waitv rseq getrandom sched_getaffinity sched_setaffinity sched_getparam sched_getscheduler
epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd
signalfd4 timerfd_create timerfd_settime timerfd_gettime inotify_init1 close_range seccomp membarrier
utimensat futimesat statfs fstatfs mknod mknodat personality keyctl add_key sethostname setdomainname
mount umount2 pivot_root chroot setns unshare fadvise64 msync mincore sendfile copy_file_range splice
""".split()

MKDIR = "mkdir /dev/shm/d 2>&1; echo rc=$?"


@check("seccomp.installed", CL, "Seccomp", MUST, "a seccomp profile puts the process in filter mode")
def installed(t):
    out = t.sh("grep ^Seccomp: /proc/self/status", linux=profile())
    t.expect_eq(out.split()[-1], "2", "Seccomp mode (2 = filter)")


@check("seccomp.errno-default", CL, "Seccomp", MUST, "SCMP_ACT_ERRNO without errnoRet fails the call with EPERM")
def errno_default(t):
    out = t.sh(MKDIR, linux=profile({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}))
    t.expect("Operation not permitted" in out and "rc=1" in out, f"mkdir: {out.strip()!r}")


@check("seccomp.errnoRet", CL, "Seccomp", MUST, "errnoRet is the errno the call fails with")
def errno_ret(t):
    out = t.sh(MKDIR, linux=profile({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}))
    t.expect("Permission denied" in out, f"mkdir with errnoRet 13 (EACCES): {out.strip()!r}")


@check("seccomp.control", CL, "Seccomp", MUST, "syscalls the profile allows still work (control for the errno checks)")
def control(t):
    out = t.sh(MKDIR, linux=profile({"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"}))
    t.expect_eq(out.strip(), "rc=0", "mkdir under a profile that only blocks rmdir")


@check("seccomp.kill", CL, "Seccomp", MUST, "SCMP_ACT_KILL kills the calling process")
def kill(t):
    out = t.sh("(mkdir /dev/shm/d); echo rc=$?", linux=profile({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}))
    t.expect("rc=159" in out, f"subshell exit status should be 128+SIGSYS(31): {out.strip()!r}")


@check("seccomp.args", CL, "Seccomp", MUST, "argument filters restrict the action to matching calls")
def args(t):
    # kill(pid, 0) is blocked; kill(pid, SIGCONT) is not.
    rule = {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}
    out = t.sh("kill -0 $$ 2>/dev/null; echo zero=$?; kill -CONT $$; echo cont=$?", linux=profile(rule))
    t.expect_eq(out.split(), ["zero=1", "cont=0"], "kill -0 (blocked) and kill -CONT (allowed)")


@check("seccomp.default-action", CL, "Seccomp", MUST, "defaultAction applies to syscalls no rule names")
def default_action(t):
    # Everything busybox needs is allowed by name... except mkdir/mkdirat, which fall to the default.
    allowed = BROAD_ALLOW
    rules = ({"names": allowed, "action": "SCMP_ACT_ALLOW"},)
    out = t.sh(MKDIR, linux=profile(*rules, default="SCMP_ACT_ERRNO"))
    t.expect("Operation not permitted" in out, f"mkdir under a default-ERRNO profile: {out.strip()!r}")


@check("seccomp.unknown-action", CL, "Seccomp", MUST, "an unknown action is an error")
def unknown_action(t):
    c = t.container(args=["true"], linux=profile({"names": ["mkdir"], "action": "SCMP_ACT_CONFORMANCE"}))
    r = c.create(check=False)
    if r.returncode == 0:
        t.expect_error(c.start(check=False), "create and start with action SCMP_ACT_CONFORMANCE")


@check("seccomp.errnoRet-needs-errno-action", CL, "Seccomp", MUST,
       "errnoRet on an action without an errno (SCMP_ACT_KILL) is an error")
def errno_ret_misuse(t):
    c = t.container(args=["true"], linux=profile({"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 5}))
    r = c.create(check=False)
    if r.returncode == 0:
        t.expect_error(c.start(check=False), "create and start with errnoRet on SCMP_ACT_KILL")
