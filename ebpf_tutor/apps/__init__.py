"""The course's complete applications (chapters 15-22), one subpackage each
as they are written (none yet: chapter 15 is the first).

An application builds on everything below it (Program, sandbox, bpfsys, events)
and nothing imports it back: each is a tool that runs from its chapter and from
`ebpf-tutor <app>`.
"""
