/*
 * maxrss.c - run a command and report its peak resident set size.
 *
 *   maxrss [-o FILE] COMMAND [ARG...]
 *
 * Forks, execs COMMAND (searched in PATH) and waits for it with wait4, then
 * writes ru_maxrss in KiB, one number and a newline, to FILE (default
 * stderr).  The exit status is the command's, or 128 + signal if it was
 * killed, or 127 if it could not be run, so callers can tell a crash from a
 * result.  ru_maxrss covers the child only (and whatever it exec'd), not
 * this wrapper, which is why it is used instead of measuring from a shell.
 */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: maxrss [-o FILE] COMMAND [ARG...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *out = NULL;
	struct rusage ru;
	int argi = 1, status;
	pid_t pid;

	if (argi + 1 < argc && strcmp(argv[argi], "-o") == 0) {
		out = argv[argi + 1];
		argi += 2;
	}
	if (argi < argc && strcmp(argv[argi], "--") == 0)
		argi++;
	if (argi >= argc)
		usage();

	pid = fork();
	if (pid < 0) {
		perror("maxrss: fork");
		return 127;
	}
	if (pid == 0) {
		execvp(argv[argi], &argv[argi]);
		fprintf(stderr, "maxrss: %s: %s\n", argv[argi], strerror(errno));
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			perror("maxrss: wait4");
			return 127;
		}
	}

	FILE *f = out != NULL ? fopen(out, "w") : stderr;
	if (f == NULL) {
		fprintf(stderr, "maxrss: %s: %s\n", out, strerror(errno));
		return 127;
	}
	fprintf(f, "%ld\n", ru.ru_maxrss);
	if (f != stderr)
		fclose(f);

	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 127;
}
