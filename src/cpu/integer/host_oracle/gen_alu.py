import random
ops_bin=['add','adc','sub','sbb','and','or','xor','cmp','test']
ops_un=['inc','dec','neg','not']
ops_sh=['shl','shr','sar','rol','ror','rcl','rcr']
ops_dsh=['shld','shrd']
ops_bt=['bt','bts','btr','btc']
ops_bs=['bsf','bsr','popcnt','imul2']
ops_mul=['mul','imul1']
sizes={1:('b','b'),2:('w','w'),4:('l','k'),8:('q','q')}
out=[]
out.append('#include <stdio.h>\n#include <stdint.h>\n#include <stdlib.h>\n')
funcs=[]
def fn(name, asm, size, uses_c=False, uses_d=False):
    funcs.append((name,size))
    out.append(f'''static void {name}(uint64_t *x, uint64_t b, uint64_t c, uint64_t *d, uint64_t *f) {{
  uint64_t xx=*x, ff=*f, dd=*d;
  __asm__ volatile("push %[f]\\n\\tpopfq\\n\\t{asm}\\n\\tpushfq\\n\\tpop %[f]" : "+a"(xx), [f]"+r"(ff), "+d"(dd) : "b"(b), "c"(c) : "cc", "memory");
  *x=xx; *f=ff; *d=dd;
}}
''')
R={1:('%%al','%%bl'),2:('%%ax','%%bx'),4:('%%eax','%%ebx'),8:('%%rax','%%rbx')}
for s,(suf,_) in sizes.items():
    a,b=R[s]
    for op in ops_bin: fn(f'{op}_{s}', f'{op}{suf} {b}, {a}', s)
    for op in ops_un: fn(f'{op}_{s}', f'{op}{suf} {a}', s)
    for op in ops_sh: fn(f'{op}_{s}', f'{op}{suf} %%cl, {a}', s)
    if s>1:
        for op in ops_dsh: fn(f'{op}_{s}', f'{op}{suf} %%cl, {b}, {a}', s)
        for op in ops_bt: fn(f'{op}_{s}', f'{op}{suf} {b}, {a}', s)
        for op in ['bsf','bsr','popcnt']: fn(f'{op}_{s}', f'{op}{suf} {b}, {a}', s)
        fn(f'imul2_{s}', f'imul{suf} {b}, {a}', s)
    fn(f'mul_{s}', f'mul{suf} {b}', s)
    fn(f'imul1_{s}', f'imul{suf} {b}', s)
out.append('int main(){ srand(1234); uint64_t x,b,c,d,f,x0,d0,f0;\n')
out.append('''#define R64() (((uint64_t)rand()<<62) ^ ((uint64_t)rand()<<31) ^ (uint64_t)rand())
#define PICK() ({ uint64_t v=R64(); int k=rand()%6; if(k==0) v=0; else if(k==1) v=~0ull; else if(k==2) v=1ull<<(rand()%64); else if(k==3) v = (uint64_t)(rand()%300); v; })
''')
for name,s in funcs:
    out.append(f'''for(int i=0;i<400;i++){{ x0=x=PICK(); b=PICK(); c=(rand()%3==0)? (uint64_t)(rand()%3) : (uint64_t)(rand()%80); d0=d=PICK(); f0=f=(R64() & 0x8d5) | 2; {name}(&x,b,c,&d,&f);
 printf("{name} %llx %llx %llx %llx %llx %llx %llx %llx\\n",(unsigned long long)x0,(unsigned long long)b,(unsigned long long)c,(unsigned long long)d0,(unsigned long long)f0,(unsigned long long)x,(unsigned long long)d,(unsigned long long)(f&0x8d5)); }}
''')
out.append('return 0;}\n')
open('alu.c','w').write(''.join(out))
