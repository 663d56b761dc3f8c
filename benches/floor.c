/* benches/floor.c: the least an NBD server can do per request, as a floor
 * for `scripts/bench --floor` (not part of nbdscript; built with cc).
 *
 * One thread per connection; each recv takes every request buffered, and
 * one writev sends all their replies. Structured replies, as nbdscript and
 * nbdkit negotiate with libnbd (a read is one OFFSET_DATA chunk); no
 * extended headers, no TLS. READ and WRITE work on a RAM disk of MIB MiB:
 *
 *   floor [-f] -U PATH -P PIDFILE zero MIB    reads send one zeroed buffer,
 *                                             writes are dropped (as null)
 *   floor [-f] -U PATH -P PIDFILE copy MIB    reads copy from RAM (as a RAM
 *                                             disk serving from its pages)
 *   floor [-f] -U PATH -P PIDFILE direct MIB  reads are sent straight from
 *                                             RAM (zero copy)
 *
 * Every other command gets a reply without doing anything; every option
 * but STRUCTURED_REPLY, GO, INFO and ABORT is refused. No checks a real
 * server needs beyond bounds.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

enum { ZERO, COPY, DIRECT };
static int mode;
static char *disk;
static uint64_t size;
#define BUF (32u << 20)     /* requests buffered: up to one 32 MiB write */
#define MAXREQ 512          /* requests answered per writev */
static char zeroes[BUF];

static int get(int fd, void *p, size_t n) {
  char *c = p;
  while (n) {
    ssize_t r = recv(fd, c, n, MSG_WAITALL);
    if (r <= 0) return -1;
    c += r, n -= r;
  }
  return 0;
}

static int put(int fd, const void *p, size_t n) {
  return write(fd, p, n) == (ssize_t)n ? 0 : -1;
}

static int putv(int fd, struct iovec *iov, int n) {
  while (n) {
    ssize_t r = writev(fd, iov, n > 1024 ? 1024 : n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    while (n && (size_t)r >= iov->iov_len) r -= iov->iov_len, iov++, n--;
    if (n) iov->iov_base = (char *)iov->iov_base + r, iov->iov_len -= r;
  }
  return 0;
}

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *d, uint32_t len) {
  char h[20];
  uint64_t m = htobe64(0x3e889045565a9ULL);
  uint32_t o = htobe32(opt), t = htobe32(type), l = htobe32(len);
  memcpy(h, &m, 8), memcpy(h + 8, &o, 4), memcpy(h + 12, &t, 4), memcpy(h + 16, &l, 4);
  return put(fd, h, 20) || (len && put(fd, d, len)) ? -1 : 0;
}

/* Fixed newstyle negotiation: 0 once GO was answered. */
static int negotiate(int fd) {
  uint64_t m1 = htobe64(0x4e42444d41474943ULL), m2 = htobe64(0x49484156454F5054ULL);
  uint16_t hflags = htobe16(3); /* FIXED_NEWSTYLE | NO_ZEROES */
  uint32_t cflags;
  if (put(fd, &m1, 8) || put(fd, &m2, 8) || put(fd, &hflags, 2) || get(fd, &cflags, 4)) return -1;
  for (;;) {
    char h[16];
    uint32_t opt, len;
    if (get(fd, h, 16)) return -1;
    memcpy(&opt, h + 8, 4), memcpy(&len, h + 12, 4);
    opt = be32toh(opt), len = be32toh(len);
    if (len > 65536) return -1;
    char data[65536];
    if (get(fd, data, len)) return -1;
    if (opt == 6 || opt == 7) { /* INFO, GO: NBD_INFO_EXPORT, then ACK */
      char info[12];
      uint16_t t = 0, fl = htobe16(1 | 4); /* HAS_FLAGS | SEND_FLUSH */
      uint64_t sz = htobe64(size);
      memcpy(info, &t, 2), memcpy(info + 2, &sz, 8), memcpy(info + 10, &fl, 2);
      if (opt_reply(fd, opt, 3, info, 12) || opt_reply(fd, opt, 1, NULL, 0)) return -1;
      if (opt == 7) return 0;
    } else if (opt == 8) { /* STRUCTURED_REPLY */
      if (opt_reply(fd, opt, 1, NULL, 0)) return -1;
    } else if (opt == 2) { /* ABORT */
      opt_reply(fd, opt, 1, NULL, 0);
      return -1;
    } else if (opt_reply(fd, opt, 0x80000001, NULL, 0)) { /* ERR_UNSUP */
      return -1;
    }
  }
}

struct conn {
  char *in, *out;
  struct iovec iov[2 * MAXREQ];
  char hdr[MAXREQ][32];
};

/* Answer every whole request in c->in[0..have); returns bytes consumed
 * and fills *n iovecs. */
static size_t answer(struct conn *c, size_t have, int *n, int *disc) {
  size_t at = 0, outat = 0;
  int k = 0;
  *n = 0;
  while (have - at >= 28 && k < MAXREQ) {
    const char *r = c->in + at;
    uint16_t type;
    uint32_t len;
    uint64_t off;
    memcpy(&type, r + 6, 2), memcpy(&off, r + 16, 8), memcpy(&len, r + 24, 4);
    type = be16toh(type), off = be64toh(off), len = be32toh(len);
    size_t need = 28 + (type == 1 ? len : 0);
    if (have - at < need) break;
    if (type == 2) { *disc = 1; break; }
    uint32_t err = off > size || len > size - off || len > BUF ? 22 : 0;
    char *data = NULL;
    if (!err && type == 0) {
      data = zeroes;
      if (mode == DIRECT) {
        data = disk + off;
      } else if (mode == COPY) {
        if (outat + len > BUF) break; /* the rest next time */
        data = c->out + outat, outat += len;
        memcpy(data, disk + off, len);
      }
    }
    if (!err && type == 1 && disk) memcpy(disk + off, r + 28, len);
    /* One structured chunk with the DONE flag: OFFSET_DATA for a read's
     * data, ERROR for an error, NONE for the rest. */
    char *h = c->hdr[k++];
    uint32_t mg = htobe32(0x668e33ef);
    uint16_t flags = htobe16(1), ctype = htobe16(err ? 32769 : data ? 1 : 0);
    uint32_t clen = htobe32(err ? 6 : data ? 8 + len : 0);
    memcpy(h, &mg, 4), memcpy(h + 4, &flags, 2), memcpy(h + 6, &ctype, 2);
    memcpy(h + 8, r + 8, 8), memcpy(h + 16, &clen, 4);
    size_t hlen = 20;
    if (err) {
      uint32_t e = htobe32(err);
      memcpy(h + 20, &e, 4), memset(h + 24, 0, 2), hlen = 26;
    } else if (data) {
      uint64_t o = htobe64(off);
      memcpy(h + 20, &o, 8), hlen = 28;
    }
    c->iov[(*n)++] = (struct iovec){h, hlen};
    if (data) c->iov[(*n)++] = (struct iovec){data, len};
    at += need;
  }
  return at;
}

static void *serve(void *arg) {
  int fd = (int)(long)arg;
  struct conn *c = calloc(1, sizeof *c);
  if (!c || !(c->in = malloc(BUF + 28)) || !(c->out = malloc(BUF)) || negotiate(fd)) goto out;
  size_t have = 0;
  int disc = 0;
  while (!disc) {
    ssize_t r = recv(fd, c->in + have, BUF + 28 - have, 0);
    if (r <= 0) break;
    have += r;
    int n;
    size_t used;
    do {
      used = answer(c, have, &n, &disc);
      memmove(c->in, c->in + used, have - used);
      have -= used;
      if (n && putv(fd, c->iov, n)) goto out;
    } while (used && !disc);
  }
out:
  close(fd);
  if (c) free(c->in), free(c->out), free(c);
  return NULL;
}

int main(int argc, char **argv) {
  const char *path = NULL, *pidfile = NULL, *words[2] = {0};
  int w = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-U") && i + 1 < argc) path = argv[++i];
    else if (!strcmp(argv[i], "-P") && i + 1 < argc) pidfile = argv[++i];
    else if (strcmp(argv[i], "-f") && w < 2) words[w++] = argv[i];
  }
  if (!path || w != 2) {
    fprintf(stderr, "usage: floor [-f] -U PATH [-P PIDFILE] zero|copy|direct SIZE_MIB\n");
    return 2;
  }
  mode = !strcmp(words[0], "copy") ? COPY : !strcmp(words[0], "direct") ? DIRECT : ZERO;
  size = strtoull(words[1], NULL, 10) << 20;
  if (mode != ZERO && !(disk = calloc(1, size))) return perror("disk"), 1;
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  unlink(path);
  if (bind(s, (void *)&a, sizeof a) || listen(s, 64)) return perror(path), 1;
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    if (!f) return perror(pidfile), 1;
    fprintf(f, "%d\n", getpid()), fclose(f);
  }
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    pthread_t t;
    if (pthread_create(&t, NULL, serve, (void *)(long)c) == 0) pthread_detach(t);
    else close(c);
  }
}
