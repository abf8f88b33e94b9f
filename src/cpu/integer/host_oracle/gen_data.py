out=['#include <stdio.h>\n#include <stdint.h>\n#include <stdlib.h>\n']
funcs=[]
def fn(name, asm, size, pre=''):
    funcs.append((name,size,pre))
    out.append(f'''static void {name}(uint64_t *x, uint64_t *pb, uint64_t *pc, uint64_t *d, uint64_t *f) {{
  uint64_t xx=*x, ff=*f, dd=*d, b=*pb, c=*pc;
  __asm__ volatile("push %[f]\\n\\tpopfq\\n\\t{asm}\\n\\tpushfq\\n\\tpop %[f]" : "+a"(xx), [f]"+r"(ff), "+d"(dd), "+b"(b), "+c"(c) : : "cc", "memory");
  *x=xx; *f=ff; *d=dd; *pb=b; *pc=c;
}}
''')
R={1:('%%al','%%bl','%%cl'),2:('%%ax','%%bx','%%cx'),4:('%%eax','%%ebx','%%ecx'),8:('%%rax','%%rbx','%%rcx')}
suf={1:'b',2:'w',4:'l',8:'q'}
for s in [1,2,4,8]:
    a,b,c=R[s]; u=suf[s]
    M=(1<<(8*s))-1
    if s==1:
        dpre='b&=0xff; if(!b) b=1; x = (x & ~0xffffull) | ((uint64_t)(rand()%b)<<8) | (x&0xff);'
        ipre='b&=0xff; if(!b||b==0xff) b=3; { int8_t q=(int8_t)(rand()%100-50); int8_t r=(int8_t)(rand()%(int)(b<0x80?b:(0x100-b))); int16_t n=(int16_t)((int8_t)b*q)+ (q<0? -r: r); x=(x&~0xffffull)|(uint16_t)n; }'
    else:
        dpre=f'b&=0x{M:x}ull; if(!b) b=1; d = (d & ~0x{M:x}ull) | ((d & 0x{M:x}ull) % b);'
        ipre=f'b&=0x{M:x}ull; if(!b) b=1; {{ int64_t sx = ((int64_t)(x<<{64-8*s}))>>{64-8*s}; d = (d&~0x{M:x}ull) | ((uint64_t)(sx<0?-1:0) & 0x{M:x}ull); if ((b&0x{M:x}ull)==0x{M:x}ull) b=5; }}'
    fn(f'div_{s}', f'div{u} {b}', s, dpre)
    fn(f'idiv_{s}', f'idiv{u} {b}', s, ipre)
    fn(f'xadd_{s}', f'xadd{u} {b}, {a}', s)
    fn(f'cmpxchg_{s}', f'cmpxchg{u} {b}, {c}', s, 'if(rand()%2) c=x;')
    if s>1:
        fn(f'bswapx_{s}', f'bswap{u} {a}', s) if s>2 else None
        for cc in ['o','b','be','l','le','p','s','z']:
            fn(f'cmov{cc}_{s}', f'cmov{cc}{u} {b}, {a}', s)
    fn(f'xchg_{s}', f'xchg{u} {b}, {a}', s)
    fn(f'movsx_{s}', {1:'movsbq %%bl, %%rax',2:'movswq %%bx, %%rax',4:'movslq %%ebx, %%rax',8:'movsbl %%bl, %%eax'}[s], s)
    fn(f'movzx_{s}', {1:'movzbl %%bl, %%eax',2:'movzwl %%bx, %%eax',4:'movzbw %%bl, %%ax',8:'movzwq %%bx, %%rax'}[s], s)
for cc in ['o','b','be','l','le','p','s','z','a','g','ge','ns']:
    fn(f'set{cc}_1', f'set{cc} %%al', 1)
fn('lahf_1','lahf',1); fn('sahf_1','sahf',1); fn('cmc_1','cmc',1)
fn('cbw_2','cbtw',2); fn('cwde_4','cwtl',4); fn('cdqe_8','cltq',8)
fn('cwd_2','cwtd',2); fn('cdq_4','cltd',4); fn('cqo_8','cqto',8)
out.append('''int main(){ srand(99); uint64_t x,b,c,d,f,x0,d0,f0,b0,c0;
#define R64() (((uint64_t)rand()<<62) ^ ((uint64_t)rand()<<31) ^ (uint64_t)rand())
#define PICK() ({ uint64_t v=R64(); int k=rand()%6; if(k==0) v=0; else if(k==1) v=~0ull; else if(k==2) v=1ull<<(rand()%64); else if(k==3) v = (uint64_t)(rand()%300); v; })
''')
for name,s,pre in funcs:
    out.append(f'''for(int i=0;i<300;i++){{ x=PICK(); b=PICK(); c=PICK(); d=PICK(); {pre} x0=x; b0=b; c0=c; d0=d; f0=f=(R64() & 0x8d5) | 2; {name}(&x,&b,&c,&d,&f);
 printf("{name} %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx\\n",(unsigned long long)x0,(unsigned long long)b0,(unsigned long long)c0,(unsigned long long)d0,(unsigned long long)f0,(unsigned long long)x,(unsigned long long)d,(unsigned long long)(f&0x8d5),(unsigned long long)b,(unsigned long long)c); }}
''')
out.append('return 0;}\n')
open('data.c','w').write(''.join(out))
