/*
 * proc.h - what the integration tests read of their own process from
 * /proc, with read(2) into a stack buffer: measuring must not allocate.
 */
#ifndef SM_TEST_PROC_H
#define SM_TEST_PROC_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* The start of the file at path in buf, NUL-terminated; false if unreadable. */
static inline bool proc_read(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* Resident set size in KiB, from the kernel; -1 if unreadable. */
static inline long rss_kib(void)
{
    char buf[4096];
    if (!proc_read("/proc/self/smaps_rollup", buf, sizeof buf))
        return -1;
    char *r = strstr(buf, "\nRss:");
    return r ? strtol(r + 5, NULL, 10) : -1;
}

#endif
