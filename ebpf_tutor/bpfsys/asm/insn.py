"""One BPF instruction: its 8 bytes, how to write them and how to read them.

Every eBPF instruction has the same shape (`struct bpf_insn` in
`include/uapi/linux/bpf.h`):

    byte 0      opcode    what to do; its low 3 bits are the instruction class
    byte 1      dst, src  two 4-bit register numbers
    bytes 2-3   off       signed 16-bit: a memory offset or a jump distance
    bytes 4-7   imm       signed 32-bit immediate value

The one exception is `ld_imm64`, which loads a 64-bit constant and so takes
two 8-byte slots: the second slot carries the upper 32 bits in its `imm`.

Bytecode is in the byte order of the machine it runs on (little-endian on
x86_64 and arm64, big-endian on s390x), like the rest of the kernel's data.

This module also turns instructions back into text, in the same notation as
the kernel's verifier log and `bpftool prog dump xlated`.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Iterable


class AsmError(ValueError):
    """An instruction that cannot be encoded (a value out of range, an unknown
    label or helper)."""


# ------------------------------------------------------------ registers --
@dataclass(frozen=True)
class Reg:
    """A BPF register, R0 to R10."""
    num: int

    def __post_init__(self):
        if not 0 <= self.num <= 10:
            raise AsmError(f"there are 11 registers, R0 to R10; R{self.num} does not exist")

    def __repr__(self) -> str:
        return f"R{self.num}"


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = (Reg(n) for n in range(11))
FP = R10  # the frame pointer: read-only, points just past the 512-byte stack

# ---------------------------------------------------------- opcode parts --
# instruction classes (opcode & 0x07)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = ["ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64"]

# ALU and jump instructions: operation (opcode & 0xf0) and source (opcode & 0x08)
K, X = 0x00, 0x08          # operand is the immediate (K) or the src register (X)
ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xa0, "mov": 0xb0,
           "arsh": 0xc0, "end": 0xd0}
JMP_OPS = {"ja": 0x00, "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50,
           "jsgt": 0x60, "jsge": 0x70, "call": 0x80, "exit": 0x90, "jlt": 0xa0,
           "jle": 0xb0, "jslt": 0xc0, "jsle": 0xd0}
TO_LE, TO_BE = 0x00, 0x08  # the source bit of an `end` (byte swap) instruction

# loads and stores: size (opcode & 0x18) and mode (opcode & 0xe0)
W, H, B, DW = 0x00, 0x08, 0x10, 0x18          # 4, 2, 1, 8 bytes
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xc0
FETCH, XCHG, CMPXCHG = 0x01, 0xe1, 0xf1      # atomic operations (in imm)

# the src field of ld_imm64 and call gives imm a special meaning
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE = 1, 2        # imm is a map fd (the kernel swaps in the map)
PSEUDO_CALL, PSEUDO_KFUNC_CALL = 1, 2         # call a BPF function / a kernel function

LD_IMM64 = LD | DW | IMM                      # 0x18, the only two-slot opcode

S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)


def to_s32(value: int) -> int:
    """A 32-bit pattern (signed or unsigned) as the signed int the imm field holds."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


# ----------------------------------------------------------- instruction --
@dataclass(frozen=True)
class Insn:
    """One instruction as fields. `imm_hi` is used only by ld_imm64 (its
    second slot); `target` is a label name a jump still waits for."""
    opcode: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    imm_hi: int = 0
    target: str | None = None

    def __post_init__(self):
        checks = [("opcode", self.opcode, (0, 255)), ("dst", self.dst, (0, 15)),
                  ("src", self.src, (0, 15)), ("off", self.off, S16),
                  ("imm", self.imm, S32), ("imm_hi", self.imm_hi, S32)]
        for name, value, (lo, hi) in checks:
            if not lo <= value <= hi:
                raise AsmError(f"{name}={value} does not fit in its field ({lo}..{hi})")

    @property
    def cls(self) -> int:
        return self.opcode & 0x07

    @property
    def slots(self) -> int:
        """How many 8-byte slots it takes: 2 for ld_imm64, else 1."""
        return 2 if self.opcode == LD_IMM64 else 1

    @property
    def imm64(self) -> int:
        """The 64-bit constant of an ld_imm64, as an unsigned number."""
        return ((self.imm_hi & 0xFFFFFFFF) << 32) | (self.imm & 0xFFFFFFFF)

    def encode(self, byteorder: str = sys.byteorder) -> bytes:
        """The instruction's bytes (16 for ld_imm64, else 8)."""
        if self.target is not None:
            raise AsmError(f"jump to label {self.target!r} is not resolved: use assemble()")
        end = "<" if byteorder == "little" else ">"
        regs = (self.src << 4 | self.dst) if byteorder == "little" else (self.dst << 4 | self.src)
        out = struct.pack(end + "BBhi", self.opcode, regs, self.off, self.imm)
        if self.opcode == LD_IMM64:
            out += struct.pack(end + "BBhi", 0, 0, 0, self.imm_hi)
        return out

    def __str__(self) -> str:
        return disasm_insn(self)


def encode(insns: Iterable[Insn], byteorder: str = sys.byteorder) -> bytes:
    """Concatenate the encodings of resolved instructions."""
    return b"".join(i.encode(byteorder) for i in insns)


def decode(code: bytes, byteorder: str = sys.byteorder) -> list[Insn]:
    """Bytes back into instructions (an ld_imm64 becomes one Insn)."""
    if len(code) % 8:
        raise AsmError(f"{len(code)} bytes is not a whole number of 8-byte instructions")
    end = "<" if byteorder == "little" else ">"
    slots = [struct.unpack_from(end + "BBhi", code, i) for i in range(0, len(code), 8)]
    out, i = [], 0
    while i < len(slots):
        opcode, regs, off, imm = slots[i]
        dst, src = (regs & 0xF, regs >> 4) if byteorder == "little" else (regs >> 4, regs & 0xF)
        imm_hi = 0
        if opcode == LD_IMM64:
            if i + 1 == len(slots):
                raise AsmError(f"slot {i}: ld_imm64 without its second slot")
            imm_hi = slots[i + 1][3]
            i += 1
        out.append(Insn(opcode, dst, src, off, imm, imm_hi))
        i += 1
    return out


# -------------------------------------------------------- helper numbers --
# enum bpf_func_id (include/uapi/linux/bpf.h): the helper with number n is
# HELPER_NAMES[n]; `call` instructions carry that number in imm.
HELPER_NAMES = """
unspec map_lookup_elem map_update_elem map_delete_elem probe_read ktime_get_ns
trace_printk get_prandom_u32 get_smp_processor_id skb_store_bytes l3_csum_replace
l4_csum_replace tail_call clone_redirect get_current_pid_tgid get_current_uid_gid
get_current_comm get_cgroup_classid skb_vlan_push skb_vlan_pop skb_get_tunnel_key
skb_set_tunnel_key perf_event_read redirect get_route_realm perf_event_output
skb_load_bytes get_stackid csum_diff skb_get_tunnel_opt skb_set_tunnel_opt
skb_change_proto skb_change_type skb_under_cgroup get_hash_recalc get_current_task
probe_write_user current_task_under_cgroup skb_change_tail skb_pull_data csum_update
set_hash_invalid get_numa_node_id skb_change_head xdp_adjust_head probe_read_str
get_socket_cookie get_socket_uid set_hash setsockopt skb_adjust_room redirect_map
sk_redirect_map sock_map_update xdp_adjust_meta perf_event_read_value
perf_prog_read_value getsockopt override_return sock_ops_cb_flags_set msg_redirect_map
msg_apply_bytes msg_cork_bytes msg_pull_data bind xdp_adjust_tail skb_get_xfrm_state
get_stack skb_load_bytes_relative fib_lookup sock_hash_update msg_redirect_hash
sk_redirect_hash lwt_push_encap lwt_seg6_store_bytes lwt_seg6_adjust_srh
lwt_seg6_action rc_repeat rc_keydown skb_cgroup_id get_current_cgroup_id
get_local_storage sk_select_reuseport skb_ancestor_cgroup_id sk_lookup_tcp
sk_lookup_udp sk_release map_push_elem map_pop_elem map_peek_elem msg_push_data
msg_pop_data rc_pointer_rel spin_lock spin_unlock sk_fullsock tcp_sock skb_ecn_set_ce
get_listener_sock skc_lookup_tcp tcp_check_syncookie sysctl_get_name
sysctl_get_current_value sysctl_get_new_value sysctl_set_new_value strtol strtoul
sk_storage_get sk_storage_delete send_signal tcp_gen_syncookie skb_output
probe_read_user probe_read_kernel probe_read_user_str probe_read_kernel_str
tcp_send_ack send_signal_thread jiffies64 read_branch_records get_ns_current_pid_tgid
xdp_output get_netns_cookie get_current_ancestor_cgroup_id sk_assign ktime_get_boot_ns
seq_printf seq_write sk_cgroup_id sk_ancestor_cgroup_id ringbuf_output ringbuf_reserve
ringbuf_submit ringbuf_discard ringbuf_query csum_level skc_to_tcp6_sock
skc_to_tcp_sock skc_to_tcp_timewait_sock skc_to_tcp_request_sock skc_to_udp6_sock
get_task_stack load_hdr_opt store_hdr_opt reserve_hdr_opt inode_storage_get
inode_storage_delete d_path copy_from_user snprintf_btf seq_printf_btf
skb_cgroup_classid redirect_neigh per_cpu_ptr this_cpu_ptr redirect_peer
task_storage_get task_storage_delete get_current_task_btf bprm_opts_set
ktime_get_coarse_ns ima_inode_hash sock_from_file check_mtu for_each_map_elem snprintf
sys_bpf btf_find_by_name_kind sys_close timer_init timer_set_callback timer_start
timer_cancel get_func_ip get_attach_cookie task_pt_regs get_branch_snapshot
trace_vprintk skc_to_unix_sock kallsyms_lookup_name find_vma loop strncmp get_func_arg
get_func_ret get_func_arg_cnt get_retval set_retval xdp_get_buff_len xdp_load_bytes
xdp_store_bytes copy_from_user_task skb_set_tstamp ima_file_hash kptr_xchg
map_lookup_percpu_elem skc_to_mptcp_sock dynptr_from_mem ringbuf_reserve_dynptr
ringbuf_submit_dynptr ringbuf_discard_dynptr dynptr_read dynptr_write dynptr_data
tcp_raw_gen_syncookie_ipv4 tcp_raw_gen_syncookie_ipv6 tcp_raw_check_syncookie_ipv4
tcp_raw_check_syncookie_ipv6 ktime_get_tai_ns user_ringbuf_drain cgrp_storage_get
cgrp_storage_delete
""".split()


def helper_name(number: int) -> str:
    """`bpf_map_lookup_elem` for 1, and so on; "unknown" past the table."""
    return f"bpf_{HELPER_NAMES[number]}" if 0 < number < len(HELPER_NAMES) else "unknown"


# ----------------------------------------------------------- disassembly --
_ALU_TEXT = {0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=",
             0x60: "<<=", 0x70: ">>=", 0x90: "%=", 0xa0: "^=", 0xb0: "=", 0xc0: "s>>="}
_JMP_TEXT = {0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>",
             0x70: "s>=", 0xa0: "<", 0xb0: "<=", 0xc0: "s<", 0xd0: "s<="}
_SIZE_TEXT = {W: "u32", H: "u16", B: "u8", DW: "u64"}
_ATOMIC_TEXT = {0x00: "add", 0x40: "or", 0x50: "and", 0xa0: "xor"}


def disasm_insn(insn: Insn, map_ref: str = "fd") -> str:
    """One instruction as text, in the notation of the verifier log and
    `bpftool prog dump xlated`, e.g. `(07) r1 += 8`. A map reference shows
    its `imm` as an fd (what a program we load carries) or, with
    map_ref="id", as a map id (what the kernel's translated copy carries)."""
    code, cls = insn.opcode, insn.cls
    head = f"({code:02x})"
    op, size = code & 0xF0, code & 0x18
    if cls in (ALU, ALU64):
        r = "w" if cls == ALU else "r"
        if op == ALU_OPS["end"]:
            if cls == ALU64:
                return f"{head} r{insn.dst} = bswap{insn.imm} r{insn.dst}"
            kind = "be" if code & TO_BE else "le"
            return f"{head} r{insn.dst} = {kind}{insn.imm} r{insn.dst}"
        if op == ALU_OPS["neg"]:
            return f"{head} {r}{insn.dst} = -{r}{insn.dst}"
        text = _ALU_TEXT.get(op, "?=")
        if op in (ALU_OPS["div"], ALU_OPS["mod"]) and insn.off == 1:
            text = "s" + text
        if code & X:
            cast = {8: "(s8)", 16: "(s16)", 32: "(s32)"}.get(insn.off, "") if op == ALU_OPS["mov"] else ""
            return f"{head} {r}{insn.dst} {text} {cast}{r}{insn.src}"
        return f"{head} {r}{insn.dst} {text} {insn.imm}"
    if cls == LDX:
        kind = ("s" + _SIZE_TEXT[size][1:]) if code & 0xE0 == MEMSX else _SIZE_TEXT[size]
        return f"{head} r{insn.dst} = *({kind} *)(r{insn.src} {insn.off:+d})"
    if cls == STX:
        where = f"({_SIZE_TEXT[size]} *)(r{insn.dst} {insn.off:+d})"
        if code & 0xE0 == MEM:
            return f"{head} *{where} = r{insn.src}"
        return f"{head} " + _atomic_text(insn, where)
    if cls == ST and code & 0xE0 == MEM:
        return f"{head} *({_SIZE_TEXT[size]} *)(r{insn.dst} {insn.off:+d}) = {insn.imm}"
    if cls == LD:
        mode = code & 0xE0
        if code == LD_IMM64:
            value = {PSEUDO_MAP_FD: f"map[{map_ref}:{insn.imm}]",
                     PSEUDO_MAP_VALUE: f"map_value[{map_ref}:{insn.imm}]+{insn.imm_hi}"}.get(
                         insn.src, f"0x{insn.imm64:x}")
            return f"{head} r{insn.dst} = {value}"
        if mode == ABS:
            return f"{head} r0 = *({_SIZE_TEXT[size]} *)skb[{insn.imm}]"
        if mode == IND:
            return f"{head} r0 = *({_SIZE_TEXT[size]} *)skb[r{insn.src} + {insn.imm}]"
    if cls in (JMP, JMP32):
        r = "w" if cls == JMP32 else "r"
        if op == JMP_OPS["call"]:
            if insn.src == PSEUDO_CALL:
                return f"{head} call pc{insn.imm:+d}"
            name = "kernel-function" if insn.src == PSEUDO_KFUNC_CALL else helper_name(insn.imm)
            return f"{head} call {name}#{insn.imm}"
        if code == JMP | JMP_OPS["ja"]:
            return f"{head} goto pc{insn.off:+d}"
        if code == JMP32 | JMP_OPS["ja"]:
            return f"{head} gotol pc{insn.imm:+d}"
        if code == JMP | JMP_OPS["exit"]:
            return f"{head} exit"
        if op in _JMP_TEXT:
            rhs = f"{r}{insn.src}" if code & X else f"0x{insn.imm & 0xFFFFFFFF:x}"
            return f"{head} if {r}{insn.dst} {_JMP_TEXT[op]} {rhs} goto pc{insn.off:+d}"
    return f"{head} unknown opcode"


def _atomic_text(insn: Insn, where: str) -> str:
    bits = "64" if insn.opcode & 0x18 == DW else ""
    op, fetch = insn.imm & 0xF0, insn.imm & FETCH
    if insn.imm == XCHG:
        return f"r{insn.src} = atomic{bits}_xchg({where}, r{insn.src})"
    if insn.imm == CMPXCHG:
        return f"r0 = atomic{bits}_cmpxchg({where}, r0, r{insn.src})"
    if op in _ATOMIC_TEXT and not fetch:
        return f"lock *{where} {_ALU_TEXT[op]} r{insn.src}"
    if op in _ATOMIC_TEXT:
        return f"r{insn.src} = atomic{bits}_fetch_{_ATOMIC_TEXT[op]}({where}, r{insn.src})"
    return "unknown atomic operation"


def disasm(code: bytes | Iterable[Insn], byteorder: str = sys.byteorder,
           map_ref: str = "fd") -> str:
    """A whole program as text, one instruction a line, numbered by slot as
    bpftool does (an ld_imm64 uses two numbers). Use map_ref="id" for the
    kernel's translated instructions (bpfsys.prog_info().xlated)."""
    insns = decode(code, byteorder) if isinstance(code, (bytes, bytearray)) else list(code)
    lines, slot = [], 0
    for insn in insns:
        lines.append(f"{slot:4d}: {disasm_insn(insn, map_ref)}")
        slot += insn.slots
    return "\n".join(lines)
