"""The processes of a container and the messages between them (see channel.py for the protocol).

  parent.py        the runtime (`create`): forks, places in the cgroup, writes id maps, runs hooks
  intermediate.py  joins/creates namespaces, forks the init (a new pid ns applies to children only)
  init.py          PID 1: rootfs, pivot_root, privileges, waits on the exec fifo, execs
  exec_parent.py   the runtime (`exec`): forks the joiner, places the exec'd process in the cgroup
  joiner.py        joins the container's namespaces, forks the exec'd process (it becomes it)
"""
