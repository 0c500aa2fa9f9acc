"""Plausible wrong solutions for the labs of chapter 14 (see tests/mutants/__init__.py)."""

MUTANTS: dict[str, list[tuple[str, ...]]] = {
    "14.2": [
        ("NULL check that forgets the write it guards: counts an unwatched key too",
         "    if (!n)\n        return 0;\n    __sync_fetch_and_add(n, 1);",
         "    if (!n) {\n        u64 one = 1;\n        watched.update(&key, &one);\n        return 0;\n    }\n"
         "    __sync_fetch_and_add(n, 1);"),
        ("histogram bound left one slot too loose (loads only if masked: counts slot 16 into 0)",
         "    if (slot == 16)\n        return 0;\n", "    slot &= 15;\n"),
        ("the ring-buffer record for a zero is submitted instead of discarded",
         "events.ringbuf_discard(e, 0);", "e->value = 0;\n        events.ringbuf_submit(e, 0);"),
        ("the license changed to GPL instead of using a non-GPL helper",
         "#define BPF_LICENSE Proprietary", "#define BPF_LICENSE GPL"),
        ("message length clamped to 63: a 64-byte message is cut",
         "    if (len > sizeof(m->text))\n        len = sizeof(m->text);",
         "    if (len >= sizeof(m->text))\n        len = sizeof(m->text) - 1;"),
        ("the negative index check dropped: a masked -1 counts in slot 15",
         "    if (slot != ctx->args[0])\n        return 0;            /* the value was negative */\n", ""),
        ("the loop bound one short: the 64th entry is never summed",
         "    for (u32 i = 0; i < 64; i++) {", "    for (u32 i = 0; i < 63; i++) {"),
        ("the key zeroed after its fields are written: every flow counts under one key",
         "    f.proto = ip->protocol;\n",
         "    f.proto = ip->protocol;\n    __builtin_memset(&f, 0, sizeof(f));\n"),
        ("a missing group is created instead of ignored",
         "    if (!h)\n        return 0;\n    u64 *p = &h->slots[slot];",
         "    if (!h) {\n        struct hist z = {};\n        hist.update(&group, &z);\n"
         "        return 0;\n    }\n    u64 *p = &h->slots[slot];"),
    ],
}
