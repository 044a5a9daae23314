# lib.sh - helpers the benchmark scripts share (sourced, not run: run.sh skips it)

# A loopback tcp port free now (python3 binds port 0; without it, a pseudo-random one).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + ($$ + $(date +%N | sed 's/^0*//;s/^$/0/')) % 20000))
}

# The median of the numbers on standard input, one a line ("nan" when there is none).
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else print v[int((NR + 1) / 2)]}'; }
