# Host-oracle cases for stack instructions run on a private stack inside a 4 KiB buffer:
# (Built with -no-pie so the buffer sits at a low fixed address the guest can use too: pushed
# frame pointers are then identical.)
# ENTER (all nesting levels, 16- and 64-bit operand size), LEAVE, PUSH/POP with RSP-relative
# memory operands, 16-bit PUSH/POP. Writes stack.c; see run.sh.
import random
random.seed(5)
ops = []
for lvl in range(32):
    for alloc in [0, 8, 0x18, 0x123]:
        ops.append((f'enter_{alloc}_{lvl}', f'enterq ${alloc}, ${lvl}'))
        ops.append((f'enterw_{alloc}_{lvl}', f'enterw ${alloc}, ${lvl}'))
ops += [('leave', 'leaveq'), ('leavew', 'leavew'),
        ('push_imm', 'pushq $-5'), ('pushw_imm', 'pushw $0x1234'),
        ('push_m', 'pushq 8(%%rsp)'), ('pushw_m', 'pushw 6(%%rsp)'),
        ('pop_m', 'popq 8(%%rsp)'), ('pop_m0', 'popq (%%rsp)'), ('popw_m', 'popw 2(%%rsp)'),
        ('push_rsp', 'pushq %%rsp'), ('popw_ax', 'popw %%ax'),
        ('pushw_sp', 'pushw %%sp')]
out = ['''#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
static uint8_t buf[4096] __attribute__((aligned(16)));
static uint64_t xs(uint64_t *s) { uint64_t x = *s; x ^= x << 13; x ^= x >> 7; x ^= x << 17; *s = x; return x; }
static void fill(uint64_t seed) { uint64_t s = seed | 1; for (int i = 0; i < 4096; i++) buf[i] = (uint8_t)(xs(&s) >> 11); }
static uint64_t fnv(void) { uint64_t h = 0xcbf29ce484222325ull; for (int i = 0; i < 4096; i++) { h ^= buf[i]; h *= 0x100000001b3ull; } return h; }
''']
for name, asm in ops:
    out.append(f'''static void f_{name}(uint64_t *sp, uint64_t *bp, uint64_t *a) {{
  uint64_t SP = *sp, BP = *bp, A = *a, saved;
  __asm__ volatile("mov %%rsp, %[sv]\\n\\tmov %[sp], %%rsp\\n\\txchg %[bp], %%rbp\\n\\t{asm}\\n\\txchg %[bp], %%rbp\\n\\tmov %%rsp, %[sp]\\n\\tmov %[sv], %%rsp"
    : [sp]"+r"(SP), [bp]"+r"(BP), "+a"(A), [sv]"=&r"(saved) : : "memory");
  *sp = SP; *bp = BP; *a = A;
}}
''')
out.append('int main(void) { srand(11);\n')
for name, asm in ops:
    out.append(f'''for (int i = 0; i < 20; i++) {{ uint64_t seed = ((uint64_t)rand() << 31) ^ (uint64_t)rand();
  uint64_t sp = 2048 + (rand() % 64) * 8 + (rand() % 4 == 0 ? 2 : 0), bp = 2048 + 512 + (rand() % 128) * 8, a = ((uint64_t)rand() << 33) ^ (uint64_t)rand();
  fill(seed);
  uint64_t sp0 = sp, bp0 = bp, a0 = a, SP = (uint64_t)buf + sp, BP = (uint64_t)buf + bp;
  f_{name}(&SP, &BP, &a);
  printf("{name} %llx %llx %llx %llx %llx %llx %llx %llx %llx\\n", (unsigned long long)(uint64_t)buf, (unsigned long long)seed, (unsigned long long)sp0, (unsigned long long)bp0, (unsigned long long)a0,
    (unsigned long long)(SP - (uint64_t)buf), (unsigned long long)(BP - (uint64_t)buf), (unsigned long long)a, (unsigned long long)fnv());
}}
''')
out.append('return 0; }\n')
open('stack.c', 'w').write(''.join(out))
