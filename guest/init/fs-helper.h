/* Shared by the parts of `prism-init fs` (fs-helper.c, fs-archive.c); see fs-helper.c. */
#ifndef PRISM_FS_HELPER_H
#define PRISM_FS_HELPER_H
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

/* Longest path or link target accepted in a record (PATH_MAX). */
#define FS_MAX_NAME 4096

/* Buffered reader over stdin: the daemon's upload frames and archive records. */
struct reader {
  unsigned char buf[1 << 16];
  size_t pos, len;
};

/* Reports `err` as "<ERRNAME> <what>: <strerror>" on stderr and exits 1 (the daemon maps ERRNAME). */
_Noreturn void fs_fail(int err, const char *what);
/* Reads one NUL-terminated field into out[cap]; -1 at a clean EOF before any byte, exits on errors. */
int rd_field(struct reader *r, char *out, size_t cap);
/* Copies exactly n bytes of stdin to fd (or discards them when fd < 0); exits on EOF or error. */
void rd_copy(struct reader *r, uint64_t n, int fd, const char *what);
/* Writes one entry record to stdout: type, mode, mtime s, mtime ns, size, name, link (NUL-terminated). */
void put_record(char type, const struct stat *st, const char *name, const char *link);
/* The record type of a stat: f(ile) d(ir) l(ink) o(ther). */
char type_of(mode_t m);
/* Creates every missing directory of `path` (mode 0755), like mkdir -p; the last component too if `last`. */
void make_parents(const char *path, int last, mode_t mode);

int fs_archive_out(const char *path);
int fs_archive_in(const char *dir);
/* Change events under `dir` as lines on stdout until it goes away (fs-watch.c). */
int fs_watch(const char *dir, int recursive);

#endif
