# Host-oracle cases for memory forms: BT* bit strings and string instructions (with REP,
# REPE/REPNE, DF=1 and overlapping buffers). Writes mem.c; see run.sh.
ops = []
for s, r in [('w', 'cx'), ('l', 'ecx'), ('q', 'rcx')]:
    for op in ['bt', 'bts', 'btr', 'btc']:
        ops.append((f'{op}{s}', f'{op}{s} %%{r}, (%%rbx)', 'bt'))
for ins in ['rep movsb', 'rep movsw', 'rep movsl', 'rep movsq', 'movsb', 'movsq',
            'rep stosb', 'rep stosw', 'rep stosl', 'rep stosq', 'stosw',
            'repe cmpsb', 'repne cmpsb', 'repe cmpsw', 'repne cmpsl', 'repe cmpsq', 'cmpsb',
            'repne scasb', 'repe scasb', 'repne scasw', 'repe scasl', 'scasq',
            'lodsb', 'lodsq', 'rep lodsw']:
    ops.append((ins.replace(' ', '_'), ins, 'str'))
out = ['''#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
static uint8_t buf[4096];
static uint64_t xs(uint64_t *s) { uint64_t x = *s; x ^= x << 13; x ^= x >> 7; x ^= x << 17; *s = x; return x; }
static void fill(uint64_t seed) { uint64_t s = seed | 1; for (int i = 0; i < 4096; i++) buf[i] = (uint8_t)(xs(&s) >> 11) & ((seed & 1) ? 0x3 : 0xff); }
static uint64_t fnv(void) { uint64_t h = 0xcbf29ce484222325ull; for (int i = 0; i < 4096; i++) { h ^= buf[i]; h *= 0x100000001b3ull; } return h; }
''']
for name, asm, kind in ops:
    out.append(f'''static void f_{name}(uint64_t *si, uint64_t *di, uint64_t *c, uint64_t *a, uint64_t *b, uint64_t *f) {{
  uint64_t S = *si, D = *di, C = *c, A = *a, B = *b, F = *f;
  __asm__ volatile("push %[f]\\n\\tpopfq\\n\\t{asm}\\n\\tpushfq\\n\\tpop %[f]\\n\\tcld" : "+S"(S), "+D"(D), "+c"(C), "+a"(A), "+b"(B), [f]"+r"(F) : : "cc", "memory");
  *si = S; *di = D; *c = C; *a = A; *b = B; *f = F;
}}
''')
out.append('int main(void) { srand(7);\n')
for name, asm, kind in ops:
    if kind == 'bt':
        setup = 'si = 0; di = 0; b = 2048; c = (uint64_t)(int64_t)(rand() % 16000 - 8000); a = 0; f = ((uint64_t)rand() & 0x8d5) | 2;'
    else:
        setup = ('{ int df = rand() % 2; uint64_t cnt = (uint64_t)(rand() % 5 == 0 ? 0 : rand() % 200); '
                 'si = df ? 2400 + rand() % 1600 : rand() % 1600; di = df ? 2400 + rand() % 1600 : (rand() % 3 == 0 ? si + rand() % 16 : rand() % 1600); '
                 'c = cnt; a = ((uint64_t)rand() << 32) ^ (uint64_t)rand(); if (rand() % 2) a &= 3; b = 0; '
                 'f = ((uint64_t)rand() & 0x8d5) | 2 | (df ? 0x400 : 0); }')
    out.append(f'''for (int i = 0; i < 300; i++) {{ uint64_t seed = ((uint64_t)rand() << 31) ^ (uint64_t)rand(), si, di, c, a, b, f;
  {setup}
  fill(seed);
  uint64_t si0 = si, di0 = di, c0 = c, a0 = a, b0 = b, f0 = f;
  uint64_t S = (uint64_t)buf + si, D = (uint64_t)buf + di, B = b ? (uint64_t)buf + b : 0;
  f_{name}(&S, &D, &c, &a, &B, &f);
  printf("{name} %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx\\n", (unsigned long long)seed,
    (unsigned long long)si0, (unsigned long long)di0, (unsigned long long)c0, (unsigned long long)a0, (unsigned long long)b0, (unsigned long long)f0,
    (unsigned long long)(S - (uint64_t)buf), (unsigned long long)(D - (uint64_t)buf), (unsigned long long)c, (unsigned long long)a,
    (unsigned long long)(f & 0xcd5), (unsigned long long)fnv());
}}
''')
out.append('return 0; }\n')
open('mem.c', 'w').write(''.join(out))
