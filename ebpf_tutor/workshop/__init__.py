"""Workshop mode: one JupyterHub serves the course to a room of students.

Two modes (see docs/instructor.md):

- `trusted-room`: the hub and JupyterHub's LocalProcessSpawner on one
  instructor machine, one Linux user per student, each with the "eBPF (root)"
  kernel. Students share one kernel and the root kernel is root-equivalent:
  they are NOT isolated from each other or from the machine.
- `vm`: the hub starts one course VM per student (`vmspawner.VMSpawner`), so
  each student has a kernel of their own.

`hub` writes the hub's configuration and starts, watches and stops it;
`progress` gathers every student's lab results.
"""
