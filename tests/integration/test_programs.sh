#!/bin/sh
# Real programs under LD_PRELOAD of the library, compared with plain runs.
#
# Each workload runs twice on the same input: once plainly and once with
# LD_PRELOAD=$SPANMALLOC_LIB.  The preloaded run must exit 0, like the plain
# one, and print the same stdout.  The workloads are chosen for allocation
# patterns a unit test does not produce: CPython's and Perl's object churn,
# sort's multi-MB buffers and threads, the gcc and git toolchains' many
# short-lived processes and realloc-grown tables, and a threaded C++
# program freeing across threads.  Where a workload is a small shell script
# (sort, gcc, git), the shell and every tool it starts run preloaded too.  The Python, Perl and C++ workloads also
# read /proc/self/maps and print whether the library is mapped, which
# catches a loader that silently ignored LD_PRELOAD.
#
# Output is TAP; each check reports both wall times as a "# " line.  Runs
# happen in a temporary directory that is removed on exit.
#
# Environment:
#   SPANMALLOC_LIB       shared library to preload (required)
#   CXX                  C++17 compiler for cxx_newdelete.cc (default g++)
#   INTEGRATION_TIMEOUT  seconds before one run counts as hung (default 300)
# Any SPANMALLOC_* option in the environment reaches the preloaded runs, so
# the script can be repeated under several settings.

set -u

planned=13
here=$(cd "$(dirname "$0")" && pwd)

LC_ALL=C
TZ=UTC
export LC_ALL TZ
unset LD_PRELOAD
. "$here/tap.sh"

# --- Setup ------------------------------------------------------------------

if [ -z "${SPANMALLOC_LIB:-}" ]; then
	echo "1..$planned"
	bail_out "SPANMALLOC_LIB is not set; it names the shared library to preload"
fi
if [ ! -f "$SPANMALLOC_LIB" ]; then
	echo "1..$planned"
	bail_out "SPANMALLOC_LIB=$SPANMALLOC_LIB does not exist; build the library first"
fi
# The loader wants an absolute path once we cd around, and /proc/self/maps
# names the file after symlinks are resolved (libtool's .libs/libfoo.so is
# a link to libfoo.so.0.0.0), so keep the resolved path.
lib=$(readlink -f "$SPANMALLOC_LIB")
lib_base=$(basename "$lib")
# Not a library option; keep it from looking like one to the preloaded runs.
unset SPANMALLOC_LIB

limit=
if command -v timeout >/dev/null 2>&1; then
	limit="timeout -k 10 ${INTEGRATION_TIMEOUT:-300}"
fi

# The pid of the run in progress, so an interrupt can stop it: a hung
# preloaded program must not outlive an interrupted `make check`.
running=

stop_running() {
	[ -n "$running" ] && kill "$running" 2>/dev/null
}

work=$(mktemp -d "${TMPDIR:-/tmp}/spanmalloc-programs.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
trap 'stop_running; exit 129' HUP
trap 'stop_running; exit 130' INT
trap 'stop_running; exit 143' TERM
mkdir "$work/log" "$work/home"
cd "$work" || exit 1

# Keep user and system configuration (git's above all) out of the runs.
HOME=$work/home
XDG_CONFIG_HOME=$work/home/.config
GIT_CONFIG_NOSYSTEM=1
export HOME XDG_CONFIG_HOME GIT_CONFIG_NOSYSTEM

echo "1..$planned"

# --- Running and comparing --------------------------------------------------

now_ms() {
	ns=$(date +%s%N)
	case $ns in
	*[!0-9]*) echo $(($(date +%s) * 1000)) ;; # a date without %N
	*) echo $((ns / 1000000)) ;;
	esac
}

seconds() {
	printf '%d.%02d s' $(($1 / 1000)) $(($1 % 1000 / 10))
}

# record LOG PRELOAD COMMAND...: run COMMAND, with the library preloaded if
# PRELOAD is "yes", stdin from /dev/null, and keep its stdout, stderr, exit
# status and wall time in log/LOG.*.
record() {
	log=$work/log/$1
	if [ "$2" = yes ]; then
		shift 2
		set -- env LD_PRELOAD="$lib" "$@"
	else
		shift 2
	fi
	start=$(now_ms)
	# In the background so that a signal interrupts the wait and its trap
	# runs at once; timeout passes the kill on to the whole run.
	$limit "$@" <"/dev/null" >"$log.out" 2>"$log.err" &
	running=$!
	wait "$running"
	echo $? >"$log.status"
	running=
	echo $(($(now_ms) - start)) >"$log.ms"
}

# run MODE NAME COMMAND...: MODE is "plain" or "preload"; logs go to
# log/NAME.MODE.*, the names same() and mapped() read.
run() {
	run_log=$2.$1
	run_preload=no
	[ "$1" = preload ] && run_preload=yes
	shift 2
	record "$run_log" "$run_preload" "$@"
}

run_both() {
	run plain "$@"
	run preload "$@"
}

describe_status() {
	case $1 in
	0) echo "exited 0" ;;
	124) echo "timed out after ${INTEGRATION_TIMEOUT:-300} s" ;;
	12[6-7]) echo "could not be started (status $1)" ;;
	1[3-9][0-9] | 2[0-9][0-9]) echo "was killed by signal $(($1 - 128))" ;;
	*) echo "exited $1" ;;
	esac
}

# split_mapped NAME: move the "library mapped: ..." first line of both
# outputs of NAME into log/NAME.MODE.mapped, so the rest can be compared.
split_mapped() {
	for mode in plain preload; do
		out=$work/log/$1.$mode.out
		head -n 1 "$out" >"$out.mapped"
		sed 1d "$out" >"$out.rest"
		mv "$out.rest" "$out"
	done
}

# same NAME DESCRIPTION: one check that the preloaded run of NAME exited
# like the plain one and printed the same stdout.
same() {
	plain=$work/log/$1.plain
	pre=$work/log/$1.preload
	plain_status=$(cat "$plain.status")
	pre_status=$(cat "$pre.status")
	why=
	if grep -q 'from LD_PRELOAD cannot be preloaded' "$pre.err"; then
		why="the loader ignored LD_PRELOAD=$lib"
	elif [ "$plain_status" != 0 ]; then
		why="the plain run $(describe_status "$plain_status"), so the workload itself is broken"
	elif [ "$pre_status" != 0 ]; then
		why="the preloaded run $(describe_status "$pre_status")"
	elif ! cmp -s "$plain.out" "$pre.out"; then
		why="stdout differs"
	fi
	if [ -z "$why" ]; then
		ok "$2"
	else
		not_ok "$2"
		diag "$why"
		if ! cmp -s "$plain.out" "$pre.out"; then
			diag "diff of stdout, plain then preloaded:"
			diff "$plain.out" "$pre.out" | head -n 20 | sed 's/^/#   /'
		fi
		for mode in plain preload; do
			if [ -s "$work/log/$1.$mode.err" ]; then
				diag "stderr of the $mode run (last lines):"
				tail -n 10 "$work/log/$1.$mode.err" | sed 's/^/#   /'
			fi
		done
	fi
	diag "$1: plain $(seconds "$(cat "$plain.ms")"), preloaded $(seconds "$(cat "$pre.ms")")"
}

# mapped NAME DESCRIPTION: the library is mapped in the preloaded run of NAME
# and only there.
mapped() {
	plain=$(cat "$work/log/$1.plain.out.mapped")
	pre=$(cat "$work/log/$1.preload.out.mapped")
	if [ "$plain" = "library mapped: no" ] && [ "$pre" = "library mapped: yes" ]; then
		ok "$2"
	else
		not_ok "$2"
		diag "looked for $lib_base in /proc/self/maps" \
			"plain run:     ${plain:-(no output)}" \
			"preloaded run: ${pre:-(no output)}"
	fi
}

# have PROGRAM: PROGRAM is installed.
have() {
	command -v "$1" >/dev/null 2>&1
}

# --- 1. The loader accepts the library --------------------------------------

run preload loader cat /proc/self/maps
if grep -q "/$lib_base\$" "$work/log/loader.preload.out" &&
	! grep -q 'cannot be preloaded' "$work/log/loader.preload.err"; then
	ok "the loader maps $lib_base under LD_PRELOAD"
else
	not_ok "the loader maps $lib_base under LD_PRELOAD"
	diag "LD_PRELOAD=$lib cat /proc/self/maps $(describe_status "$(cat "$work/log/loader.preload.status")")"
	sed 's/^/#   /' "$work/log/loader.preload.err"
	bail_out "$lib cannot be preloaded; every other check would run without it"
fi

# --- 2-3. python3: dicts, lists, strings, threads ---------------------------

if have python3; then
	# Run the interpreter itself, not a wrapper script such as a pyenv shim.
	python=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
	[ -n "$python" ] || python=$(command -v python3)
	run_both python3 "$python" "$here/py_workload.py" "$lib_base"
	split_mapped python3
	same python3 "python3: dict/list/string workload prints the same digest"
	mapped python3 "python3: library mapped only in the preloaded run"
else
	skip 2 "python3 is not installed"
fi

# --- 4-6. sort: in memory, numeric, and with temporary files ----------------

if have sort; then
	# About 1.8 million lines, 40 MB, from awk's seeded generator.
	awk 'BEGIN {
		srand(20240601)
		for (i = 0; i < 1800000; i++)
			printf "%d %s%x\n", int(rand() * 2000000000) - 1000000000,
				substr("abcdefghijklmnopqrstuvwxyz", 1 + int(rand() * 26), 1 + int(rand() * 12)), i
	}' >sort.in
	mkdir sort.tmp
	# sort writes its result to a file and prints the checksum, so a
	# failing sort is seen in the exit status, not hidden by a pipe.
	cat >sort.sh <<'EOF'
sort "$@" -o "$SORT_OUT" sort.in && cksum <"$SORT_OUT"
EOF
	for variant in lexical numeric external; do
		case $variant in
		lexical) set -- ;;
		numeric) set -- -n ;;
		external) set -- -n -S 1M -T sort.tmp ;;
		esac
		for mode in plain preload; do
			SORT_OUT=$work/sort.$variant.$mode.out
			export SORT_OUT
			run "$mode" "sort-$variant" sh sort.sh "$@"
		done
	done
	unset SORT_OUT
	same sort-lexical "sort: 40 MB of lines, same checksum"
	same sort-numeric "sort -n: same checksum"
	same sort-external "sort -n -S 1M: merge through temporary files, same checksum"
	rm -f sort.in "$work"/sort.*.out
else
	skip 3 "sort is not installed"
fi

# --- 7-8. gcc: compile a generated program ----------------------------------

if have gcc; then
	# Two files of 1000 functions each plus a main that calls them all,
	# compiled by two gcc processes at once (as make -j2 would) and linked.
	mkdir gcc.src
	for part in 1 2; do
		awk -v part="$part" -v n=1000 'BEGIN {
			print "#include <stdint.h>"
			print "#include <string.h>"
			for (k = 0; k < n; k++) {
				i = part * n + k
				printf "struct s%d { uint32_t a[%d]; const char *name; };\n", i, 1 + i % 7
				printf "uint64_t f%d(uint64_t x)\n{\n", i
				printf "\tstruct s%d v = { { %d }, \"f%d\" };\n", i, i, i
				printf "\tfor (int k = 0; k < %d; k++)\n", 2 + i % 5
				printf "\t\tx = x * %du + %d, v.a[x %% %d] ^= (uint32_t)x;\n", 2 * i + 1, i, 1 + i % 7
				printf "\tif (x & %d)\n\t\tx ^= x >> %d;\n", 1 + i % 16, 1 + i % 31
				printf "\treturn x + strlen(v.name) + v.a[%d];\n}\n", i % (1 + i % 7)
			}
		}' >"gcc.src/part$part.c"
	done
	awk -v n=1000 'BEGIN {
		print "#include <stdint.h>"
		print "#include <stdio.h>"
		for (i = n; i < 3 * n; i++)
			printf "uint64_t f%d(uint64_t);\n", i
		print "static uint64_t (*const table[])(uint64_t) = {"
		for (i = n; i < 3 * n; i++)
			printf "\tf%d,\n", i
		print "};"
		print "int main(void)\n{\n\tuint64_t acc = 1;"
		print "\tfor (unsigned i = 0; i < sizeof table / sizeof table[0]; i++) {"
		print "\t\tacc = table[i](acc ^ i);"
		print "\t\tif (i % 100 == 99)"
		print "\t\t\tprintf(\"%u %016llx\\n\", i, (unsigned long long)acc);"
		print "\t}"
		print "\treturn 0;\n}"
	}' >gcc.src/main.c
	cat >gcc.sh <<'EOF'
out=$1
mkdir "$out" || exit 1
gcc -O1 -c -o "$out/part1.o" gcc.src/part1.c & p1=$!
gcc -O1 -c -o "$out/part2.o" gcc.src/part2.c & p2=$!
gcc -O1 -c -o "$out/main.o" gcc.src/main.c || exit 1
wait $p1 || exit 1
wait $p2 || exit 1
gcc -o "$out/prog" "$out/main.o" "$out/part1.o" "$out/part2.o"
EOF
	run plain gcc sh gcc.sh gcc.plain
	run preload gcc sh gcc.sh gcc.preload
	same gcc "gcc: 2000 generated functions compile and link"
	# GCC's output does not depend on heap addresses (reproducible builds
	# rely on it), so the objects must match byte for byte.
	objects_differ=
	for o in main.o part1.o part2.o prog; do
		cmp -s "gcc.plain/$o" "gcc.preload/$o" || objects_differ="$objects_differ $o"
	done
	# Both builds run plainly: this compares what gcc produced.
	record gcc-prog.plain no gcc.plain/prog
	record gcc-prog.preload no gcc.preload/prog
	check="gcc: objects built under LD_PRELOAD are identical, and so is the program's output"
	if [ -n "$objects_differ" ]; then
		not_ok "$check"
		diag "differ from the plain build:$objects_differ"
	elif [ "$(cat "$work/log/gcc-prog.plain.status")$(cat "$work/log/gcc-prog.preload.status")" != 00 ] ||
		! cmp -s "$work/log/gcc-prog.plain.out" "$work/log/gcc-prog.preload.out"; then
		not_ok "$check"
		diag "the two builds of the program ran differently"
	else
		ok "$check"
	fi
	diag "gcc-prog: plain build $(seconds "$(cat "$work/log/gcc-prog.plain.ms")"), preloaded build $(seconds "$(cat "$work/log/gcc-prog.preload.ms")")"
	rm -rf gcc.src gcc.plain gcc.preload
else
	skip 2 "gcc is not installed"
fi

# --- 9. git: commits, history, gc, fsck -------------------------------------

if have git; then
	# Six snapshots of a tree of 250 to 400 files: each round edits a
	# quarter of the files, adds 25, deletes a few and moves some to
	# another directory, so log --stat has renames to detect.
	rounds=6
	awk -v rounds="$rounds" -v root="$work/git.trees" 'BEGIN {
		for (r = 1; r <= rounds; r++) {
			for (d = 0; d < 10; d++)
				system("mkdir -p \"" root "/" r "/src/d" d "\"")
			for (i = 0; i < 250 + 25 * r; i++) {
				if ((i + r) % 29 == 0)
					continue
				v = 0
				for (s = 1; s <= r; s++)
					if ((i * 7 + s) % 4 == 0)
						v = s
				dir = (i + (r > 3 && i % 13 == 0)) % 10
				path = root "/" r "/src/d" dir "/file" i ".txt"
				lines = 20 + (i * 37) % 150
				for (j = 0; j < lines; j++)
					printf "file %d line %d rev %d %s\n", i, j, (j % 5 == i % 5) ? v : 0,
						substr("lorem ipsum dolor sit amet consectetur", 1 + (i + j) % 20) >path
				close(path)
			}
		}
	}'
	cat >git.sh <<'EOF'
# git.sh REPO TREES ROUNDS: build REPO from the snapshots in TREES, then
# print history, object list and checksums that depend only on content.
repo=$1 trees=$2 rounds=$3
set -e
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY \
	GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_CONFIG GIT_CONFIG_PARAMETERS \
	GIT_CONFIG_COUNT GIT_CONFIG_GLOBAL GIT_TEMPLATE_DIR GIT_AUTHOR_NAME \
	GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL
scratch=$repo.scratch
mkdir "$scratch"
git init -q "$repo"
cd "$repo"
git symbolic-ref HEAD refs/heads/main
git config user.name "Integration Test"
git config user.email test@example.invalid
git config gc.auto 0
r=1
while [ "$r" -le "$rounds" ]; do
	rm -rf src
	cp -R "$trees/$r/src" src
	git add -A
	GIT_AUTHOR_DATE="@$((1700000000 + r * 3600)) +0000" \
	GIT_COMMITTER_DATE="@$((1700000000 + r * 3600)) +0000" \
		git commit -q -m "round $r"
	r=$((r + 1))
done
git log --stat -M
git log -p >"$scratch/log-p"
echo "log -p: $(cksum <"$scratch/log-p")"
git diff --stat -M HEAD~3 HEAD
git gc -q --aggressive
git fsck --full --strict --no-progress
git count-objects -v | grep -E '^(count|in-pack|packs):'
git cat-file --batch-all-objects --batch-check
git archive --format=tar HEAD >"$scratch/head.tar"
echo "archive: $(cksum <"$scratch/head.tar")"
EOF
	run plain git sh git.sh "$work/git.plain" "$work/git.trees" "$rounds"
	run preload git sh git.sh "$work/git.preload" "$work/git.trees" "$rounds"
	same git "git: $rounds commits of up to 400 files, log, gc and fsck agree"
	rm -rf git.trees git.plain git.plain.scratch git.preload git.preload.scratch
else
	skip 1 "git is not installed"
fi

# --- 10-11. perl: a large hash ----------------------------------------------

if have perl; then
	run_both perl perl "$here/pl_workload.pl" "$lib_base"
	split_mapped perl
	same perl "perl: hash of 200000 keys, sorted, prints the same digest"
	mapped perl "perl: library mapped only in the preloaded run"
else
	skip 2 "perl is not installed"
fi

# --- 12-13. C++: new/delete forms and containers across threads -----------

cxx=${CXX:-g++}
if have "${cxx%% *}"; then
	# Built plainly: the program under test is the C++ binary, not the
	# compiler.  $cxx may carry flags, so it is split on purpose.
	if $cxx -std=c++17 -O2 -pthread -o cxx_newdelete "$here/cxx_newdelete.cc" \
		>cxx.build.log 2>&1; then
		run_both cxx ./cxx_newdelete "$lib_base"
		split_mapped cxx
		same cxx "C++: new/delete, aligned new and containers in 4 threads agree"
		mapped cxx "C++: library mapped only in the preloaded run"
	else
		not_ok "C++: new/delete, aligned new and containers in 4 threads agree"
		diag "$cxx could not build cxx_newdelete.cc:"
		tail -n 20 cxx.build.log | sed 's/^/#   /'
		skip 1 "cxx_newdelete.cc did not build"
	fi
else
	skip 2 "$cxx is not installed"
fi

if [ "$count" -ne "$planned" ]; then
	diag "ran $count checks but planned $planned"
	failed=$((failed + 1))
fi
[ "$failed" -eq 0 ]
