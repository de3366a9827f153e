#!/usr/bin/env bash
# Run one benchmark command and keep its raw output with what a reader needs to weigh it:
#   bash benchmarks/record.sh DIR NAME -- COMMAND...
# writes DIR/NAME.txt (the command's stdout and stderr) and DIR/NAME.machine.txt: the commit
# (+dirty when tracked files differ from it), the date, the CPU model and flags (lscpu), the JAX
# version, the command, and the load average (uptime) before and after. Exit status: the command's.
set -uo pipefail
out=$1
name=$2
shift 3
py=${PYTHON:-python}
mkdir -p "$out"
{
  echo "commit: $(git rev-parse --short HEAD)$(test -n "$(git status --porcelain --untracked-files=no)" && echo +dirty)"
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
  echo "flags: $(lscpu | sed -n 's/^Flags: *//p')"
  echo "jax: $("$py" -c 'import jax, jaxlib; print(jax.__version__, "(jaxlib", jaxlib.__version__ + ")")')"
  echo "command: $*"
  echo "uptime before: $(uptime)"
} >"$out/$name.machine.txt"
"$@" >"$out/$name.txt" 2>&1
rc=$?
{
  echo "uptime after: $(uptime)"
  echo "exit status: $rc"
} >>"$out/$name.machine.txt"
exit $rc
