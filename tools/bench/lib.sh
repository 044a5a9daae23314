# lib.sh - helpers the benchmark scripts share (sourced, not run: run.sh skips it)

# A loopback tcp port free now, below the kernel's ephemeral range (32768 and up by default),
# as tests/integ/integ_util.c picks them: a port bind(0) handed out can be taken, before its
# daemon binds it, as the local port of a peer's outgoing connection ("address in use").
free_port() {
    python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 31999)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass
    finally:
        s.close()
' 2>/dev/null | grep . ||
        echo $((20000 + ($$ + $(date +%N | sed 's/^0*//;s/^$/0/')) % 12000))
}

# The median of the numbers on standard input, one a line ("nan" when there is none).
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)]}'; }
