"""The container's terminal (process.terminal = true).

Two sides, the same protocol runc and its engines (containerd, conmon, podman) use:

- In the container, the init makes a pseudo-terminal from the container's own devpts
  (/dev/ptmx -> pts/ptmx), sends the *master* over the --console-socket unix socket with
  SCM_RIGHTS and the pty's name ("/dev/ptmx", what runc sends; receivers read but ignore it),
  then makes the slave its controlling terminal and its stdin/stdout/stderr.  With
  `mount=True` the slave is also bind-mounted on /dev/console.
- On the host, `connect_console_socket` connects to --console-socket before we fork; for our own
  `ocirun run -t` without a socket the lead makes a socketpair, receives the master with
  `recv_console_fd` and pumps it with `relay_terminal`.

Everything here is single-threaded (poll loops) and uses builtin modules only; the init calls
`setup_console_in_container` after pivot_root, so import this module before (only when
process.terminal is set).
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import struct
import termios

from . import linux
from .pipes import write_all
from .errors import OCIError, os_error, os_words

# asm-generic ioctls (x86_64 and aarch64 share them)
TIOCSPTLCK = 0x40045431  # unlockpt
TIOCGPTN = 0x80045430    # pty number
TIOCGPTPEER = 0x5441     # open the slave from the master (4.13+), no path lookup
TIOCSCTTY = termios.TIOCSCTTY
TIOCGWINSZ = termios.TIOCGWINSZ
TIOCSWINSZ = termios.TIOCSWINSZ

UNIX98_PTY_SLAVE_MAJOR = 136

PTY_NAME = b"/dev/ptmx"  # the payload runc sends with the master fd
_MAX_NAME = 4096


# --------------------------------------------------------------------------- container side

def setup_console_in_container(socket_fd: int, size: tuple[int, int] | None, mount: bool = False) -> str:
    """Make a pty, hand its master to the console socket and become its slave.

    `size` is process.consoleSize (height, width); it is applied only when both are non-zero,
    like runc.  `mount` bind-mounts the slave on /dev/console (runc does that for the init, not
    for exec).  Closes `socket_fd`.  Returns the slave's path (/dev/pts/N).
    """
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise os_error("open /dev/ptmx", e) from None
    try:
        number = _unlock(master)
        slave_path = f"/dev/pts/{number}"
        if size and size[0] and size[1]:
            set_winsize(master, size[0], size[1])
        slave = _open_slave(master, number)
        try:
            if mount:
                mount_console(slave)
            send_fd(socket_fd, master, PTY_NAME)
        except BaseException:
            os.close(slave)
            raise
    finally:
        os.close(master)
        _close_quietly(socket_fd)
    _become_controlling_terminal(slave, slave_path)
    return slave_path


def _unlock(master: int) -> int:
    """unlockpt, then the pty's number N (its slave is /dev/pts/N)."""
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        (n,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))
    except OSError as e:
        raise os_error("unlockpt /dev/ptmx", e) from None
    return n


def _open_slave(master: int, number: int) -> int:
    """The slave, opened from the master (no path to race on), or by path on old kernels.

    Whatever path lookup gave us is checked to be pty slave `number`: /dev/pts/N is only a
    name, and an image or a racing process can make it a symlink (CVE-2025-52565).
    """
    try:
        return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        pass
    slave_path = f"/dev/pts/{number}"
    try:
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise os_error(f"open {slave_path}", e) from None
    if not _is_pty_slave(os.fstat(slave), number):
        os.close(slave)
        raise OCIError(f"{slave_path} is not the slave of the pty we opened")
    return slave


def _is_pty_slave(st: os.stat_result, number: int) -> bool:
    """Unix98 pty slaves are majors 136..143, numbered major-136 * 256 + minor."""
    if not stat.S_ISCHR(st.st_mode):
        return False
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return UNIX98_PTY_SLAVE_MAJOR <= major < UNIX98_PTY_SLAVE_MAJOR + 8 and \
        (major - UNIX98_PTY_SLAVE_MAJOR) * 256 + minor == number


def _become_controlling_terminal(slave: int, slave_path: str) -> None:
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
        fcntl.ioctl(slave, TIOCSCTTY, 0)
    except OSError as e:
        os.close(slave)
        raise os_error(f"make {slave_path} the controlling terminal", e) from None
    for fd in (0, 1, 2):
        os.dup2(slave, fd)  # dup2's copy is not close-on-exec
    if slave > 2:
        os.close(slave)


def mount_console(slave: int) -> None:
    """Bind-mount the open pty slave `slave` on /dev/console (an empty file made to mount on).

    The source is the fd itself, never the name /dev/pts/N: a symlink planted there would turn
    the bind into one of whatever it names, say a procfs knob, writable as /dev/console
    (CVE-2025-52565).  /dev is resolved inside the root, and a symlink planted at
    /dev/console is removed rather than followed.
    """
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            dev = linux.openat2(root, "dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                                linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(root)
    except OSError as e:
        raise os_error("open /dev", e) from None
    try:
        target = _console_mount_point(dev)
    finally:
        os.close(dev)
    try:
        _bind_fd(slave, target)
    except OSError as e:
        raise os_error("bind mount the console on /dev/console", e) from None
    finally:
        os.close(target)


def _console_mount_point(dev: int) -> int:
    """An O_PATH fd of /dev/console, a file created if missing; a symlink there is replaced."""
    name = "console"
    try:
        try:
            st = os.stat(name, dir_fd=dev, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=dev)
            st = None
        if st is None:
            old = os.umask(0)
            try:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o666, dir_fd=dev))
            finally:
                os.umask(old)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
    except OSError as e:
        raise os_error("create /dev/console", e) from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):  # a symlink: recreated by a racing process
        os.close(fd)
        raise OCIError("/dev/console: is a directory or a symlink, cannot mount the console on it")
    return fd


def _bind_fd(source: int, target: int) -> None:
    """Bind what `source` is onto what `target` is, both open fds: no path is looked up."""
    try:
        tree = linux.open_tree(source, "", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_EMPTY_PATH)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
        # Kernels before 5.2: the magic links name the open files themselves.
        linux.mount(f"/proc/self/fd/{source}", f"/proc/self/fd/{target}", None, linux.MS_BIND)
        return
    try:
        linux.move_mount(tree, "", target, "", linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
    finally:
        os.close(tree)


def send_fd(sock_fd: int, fd: int, name: bytes = PTY_NAME) -> None:
    s = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(s, [name], [fd])
    except OSError as e:
        raise os_error("send the console to the console socket", e) from None
    finally:
        s.detach()


def set_winsize(fd: int, height: int, width: int) -> None:
    try:
        fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    except OSError as e:
        raise os_error(f"set console size {width}x{height}", e) from None


def get_winsize(fd: int) -> tuple[int, int]:
    """(height, width) of the terminal `fd`."""
    h, w, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8))
    return h, w


# --------------------------------------------------------------------------- host side

def connect_console_socket(path: str) -> int:
    """Connect to --console-socket; returns the connected fd (close-on-exec)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    dirfd = -1
    try:
        target = path
        if len(os.fsencode(path)) >= 108:  # sun_path limit: reach it through its directory
            dirfd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
            target = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
        # Non-blocking, as runc dials: a unix socket connects at once or not at all, and a
        # listener whose backlog is full (one that never accepts) made a blocking connect wait
        # forever.  Back to blocking for sending the pty's fd.
        s.setblocking(False)
        s.connect(target)
        s.setblocking(True)
    except OSError as e:
        s.close()
        raise OCIError(f"--console-socket {path}: {os_words(e)}") from None
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    return s.detach()


def recv_console_fd(sock_fd: int) -> int:
    """Receive the pty master the init sends on `sock_fd` (our end of a socketpair).

    Returns the fd (close-on-exec); `sock_fd` stays open and the caller's.
    """
    s = socket.socket(fileno=sock_fd)
    try:
        while True:
            try:
                # socket.recv_fds drops its flags argument in 3.11: call recvmsg ourselves
                _msg, anc, _flags, _addr = s.recvmsg(_MAX_NAME, socket.CMSG_SPACE(4 * 4),
                                                     socket.MSG_CMSG_CLOEXEC)
                break
            except InterruptedError:
                continue
    except OSError as e:
        raise os_error("receive the console from the container", e) from None
    finally:
        s.detach()
    fds = [int.from_bytes(data[i:i + 4], "little", signed=True)
           for level, kind, data in anc if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for i in range(0, len(data) - len(data) % 4, 4)]
    if not fds:
        raise OCIError("receive the console from the container: the container sent no terminal")
    for extra in fds[1:]:
        os.close(extra)
    return fds[0]


def relay_terminal(master_fd: int, child_pid: int) -> int:
    """Pump our stdin to the pty master and the master to our stdout until the container's
    side hangs up or `child_pid` exits; returns the number of bytes copied to stdout.

    If our stdin is a terminal it is put in raw mode (restored on return) and its size is
    copied to the pty now and on every SIGWINCH.  Like runc, ONLCR is cleared on the pty so
    "\\n" from the container stays "\\n" when our stdout is a file or pipe.  The caller reaps.
    """
    _clear_onlcr(master_fd)
    tty_fd = next((fd for fd in (0, 1) if os.isatty(fd)), None)
    saved = _make_raw(0) if os.isatty(0) else None
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_handler = signal.signal(signal.SIGWINCH, lambda *_: None)
    try:
        pidfd = linux.pidfd_open(child_pid)
    except OSError:
        pidfd = -1
    was_blocking = os.get_blocking(master_fd)
    os.set_blocking(master_fd, False)
    try:
        if tty_fd is not None:
            _copy_winsize(tty_fd, master_fd)
        return _pump(master_fd, pidfd, wake_r, tty_fd)
    finally:
        os.set_blocking(master_fd, was_blocking)
        signal.signal(signal.SIGWINCH, old_handler)
        signal.set_wakeup_fd(old_wakeup)
        for fd in (wake_r, wake_w, pidfd):
            if fd >= 0:
                os.close(fd)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _pump(master: int, pidfd: int, wake_r: int, tty_fd: int | None) -> int:
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    stdin_open = True
    poller.register(0, select.POLLIN)
    pending = b""  # input the container has not taken yet
    copied = 0
    while True:
        for fd, ev in poller.poll():
            if fd == master:
                if ev & select.POLLOUT and pending:
                    pending = _write_some(master, pending)
                    if not pending:
                        poller.modify(master, select.POLLIN)
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    n = _copy_out(master)
                    if n < 0:
                        return copied
                    copied += n
            elif fd == pidfd:
                while (n := _copy_out(master)) > 0:
                    copied += n
                return copied
            elif fd == wake_r:
                _drain(wake_r)
                if tty_fd is not None:
                    _copy_winsize(tty_fd, master)
            elif fd == 0 and stdin_open:
                data = _read(0)
                if data is None:
                    continue
                if not data:  # EOF on our stdin: stop reading it; a pty cannot be half-closed
                    poller.unregister(0)
                    stdin_open = False
                    continue
                pending += data
                pending = _write_some(master, pending)
                if pending:
                    poller.modify(master, select.POLLIN | select.POLLOUT)


def _copy_out(master: int) -> int:
    """Copy one read of the master to stdout: bytes copied, 0 if nothing now, -1 on hang-up."""
    try:
        data = os.read(master, 65536)
    except BlockingIOError:
        return 0
    except OSError:  # EIO: every slave fd is closed
        return -1
    if not data:
        return -1
    write_all(1, data)
    return len(data)


def _write_some(fd: int, data: bytes) -> bytes:
    try:
        return data[os.write(fd, data):]
    except BlockingIOError:
        return data
    except OSError:  # the container side is gone; the hang-up ends the loop
        return b""


def _read(fd: int) -> bytes | None:
    """One read: the data, b"" at EOF (or an error), None when nothing is there after all."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _copy_winsize(src: int, dst: int) -> None:
    try:
        fcntl.ioctl(dst, TIOCSWINSZ, fcntl.ioctl(src, TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass


def _clear_onlcr(fd: int) -> None:
    try:
        attrs = termios.tcgetattr(fd)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass


def _make_raw(fd: int):
    """cfmakeraw on `fd`; returns the attributes to restore."""
    saved = termios.tcgetattr(fd)
    attrs = termios.tcgetattr(fd)
    attrs[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                  | termios.IGNCR | termios.ICRNL | termios.IXON)
    attrs[1] &= ~termios.OPOST
    attrs[2] &= ~(termios.CSIZE | termios.PARENB)
    attrs[2] |= termios.CS8
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return saved


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
