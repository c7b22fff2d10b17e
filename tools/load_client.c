// Compiled load client for `deno task bench` and the load tests (BENCH_CLIENT=c): N WebSocket connections on one
// epoll loop, so the client is not the bottleneck when a relay delivers 100k+ frames/s.
// Usage: client PORT N [PATH] (PATH default /ws/stream; e.g. /ws/stream?encoding=deflate-raw).
// Commands on stdin, one per line:
//   stats  -> prints one JSON line with counters and latency percentiles since the last stats
//   count  -> prints {"received":N}: frames since the last stats, without resetting anything
//   quit   -> exits
// Each text frame is expected to start with {"seq":N,"pub_us":T (T in µs, CLOCK_REALTIME); a
// binary frame is raw DEFLATE of such a text: only its first bytes are inflated, to read the two
// numbers (zlib; built with -DNO_ZLIB binary frames are counted but not timed). `bytes` counts
// every data frame's payload as it came over the wire.
// All N connects start at once (non-blocking), as in a reconnect storm; each connection times
// its first frame (the cached snapshot) from the start of its connect, which is what a user sees
// as a blank screen, and from its 101 (both reported by stats).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifndef NO_ZLIB
#include <zlib.h>
#endif

#define BUF (1 << 20)
#define MAX_LAT (1 << 24)

typedef struct {
  int fd;
  int state; // 0 connecting, 1 handshake sent, 2 open, 3 closed
  unsigned char *buf;
  size_t len;
  long long last_seq;
  double start_ms, opened_ms, first_ms;
} conn_t;

static conn_t *conns;
static int n_conns;
static long long received, gaps, out_of_order, closed_count, bytes_in, binary_frames;
static float *lat;
static size_t n_lat;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static double now_us_real(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static void send_masked(int fd, int opcode, const unsigned char *payload, size_t n) {
  unsigned char frame[256];
  if (n > 125) n = 125;
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | (unsigned char)n;
  memset(frame + 2, 0, 4); // zero mask: payload unchanged
  memcpy(frame + 6, payload, n);
  (void)!write(fd, frame, 6 + n);
}

static void on_text(conn_t *c, const unsigned char *p, size_t n, double t) {
  // {"seq":123,"pub_us":1234567890123456
  if (n < 20 || memcmp(p, "{\"seq\":", 7) != 0) return;
  size_t i = 7;
  long long seq = 0;
  while (i < n && p[i] >= '0' && p[i] <= '9') seq = seq * 10 + (p[i++] - '0');
  if (i + 10 > n || memcmp(p + i, ",\"pub_us\":", 10) != 0) return;
  i += 10;
  double pub = 0;
  while (i < n && p[i] >= '0' && p[i] <= '9') pub = pub * 10 + (p[i++] - '0');
  if (c->last_seq >= 0) {
    if (seq > c->last_seq + 1) gaps += seq - c->last_seq - 1;
    else if (seq <= c->last_seq) out_of_order++;
  }
  c->last_seq = seq;
  received++;
  if (n_lat < MAX_LAT) lat[n_lat++] = (float)((t - pub) / 1000.0);
}

#ifndef NO_ZLIB
static z_stream inflater; // one for all: each frame is inflated at once, from its start
#endif

/** A binary frame: inflates only the start of its raw DEFLATE (enough for seq and pub_us). */
static void on_binary(conn_t *c, unsigned char *p, size_t n, double t) {
#ifndef NO_ZLIB
  unsigned char head[64];
  inflateReset(&inflater);
  inflater.next_in = p;
  inflater.avail_in = (uInt)n;
  inflater.next_out = head;
  inflater.avail_out = sizeof head;
  int rc = inflate(&inflater, Z_SYNC_FLUSH);
  if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return;
  on_text(c, head, sizeof head - inflater.avail_out, t);
#else
  (void)c, (void)p, (void)n, (void)t;
  received++; // counted, neither timed nor checked for gaps
#endif
}

static void parse_frames(conn_t *c) {
  size_t off = 0;
  while (c->len - off >= 2) {
    unsigned char *f = c->buf + off;
    int opcode = f[0] & 0x0f;
    size_t plen = f[1] & 0x7f, hdr = 2;
    if (plen == 126) {
      if (c->len - off < 4) break;
      plen = (f[2] << 8) | f[3];
      hdr = 4;
    } else if (plen == 127) {
      if (c->len - off < 10) break;
      plen = 0;
      for (int k = 0; k < 8; k++) plen = (plen << 8) | f[2 + k];
      hdr = 10;
    }
    if (c->len - off < hdr + plen) break;
    unsigned char *payload = f + hdr;
    if (opcode == 1 || opcode == 2) {
      double t = now_us_real();
      if (c->first_ms == 0) c->first_ms = now_ms();
      bytes_in += plen;
      if (opcode == 1) on_text(c, payload, plen, t);
      else {
        binary_frames++;
        on_binary(c, payload, plen, t);
      }
    }
    else if (opcode == 9) send_masked(c->fd, 0xA, payload, plen); // ping -> pong
    else if (opcode == 8) { // close: echo and stop
      send_masked(c->fd, 0x8, payload, plen < 2 ? plen : 2);
      c->state = 3;
      closed_count++;
      close(c->fd);
      return;
    }
    off += hdr + plen;
  }
  memmove(c->buf, c->buf + off, c->len - off);
  c->len -= off;
}

static void on_readable(conn_t *c) {
  while (c->state != 3) {
    if (c->len == BUF) { fprintf(stderr, "frame larger than buffer\n"); exit(1); }
    ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
    if (r == 0) { c->state = 3; closed_count++; close(c->fd); return; }
    if (r < 0) { if (errno == EAGAIN) return; c->state = 3; closed_count++; close(c->fd); return; }
    c->len += r;
    if (c->state == 1) {
      unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
      if (!end) continue;
      if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0) { c->state = 3; closed_count++; close(c->fd); return; }
      size_t head = end + 4 - c->buf;
      memmove(c->buf, c->buf + head, c->len - head);
      c->len -= head;
      c->state = 2;
      c->opened_ms = now_ms();
    }
    if (c->state == 2) parse_frames(c);
  }
}

static void print_stats(void) {
  qsort(lat, n_lat, sizeof(float), cmp_float);
  double p50 = n_lat ? lat[(size_t)(n_lat * 0.5)] : -1, p99 = n_lat ? lat[(size_t)(n_lat * 0.99)] : -1;
  double p999 = n_lat ? lat[(size_t)(n_lat * 0.999)] : -1, max = n_lat ? lat[n_lat - 1] : -1;
  // First frame (the snapshot) after the 101, and after the start of the connect.
  float *snap = malloc(sizeof(float) * (n_conns + 1));
  float *first = malloc(sizeof(float) * (n_conns + 1));
  size_t ns = 0, nf = 0;
  long long open_now = 0;
  for (int i = 0; i < n_conns; i++) {
    if (conns[i].state == 2) open_now++;
    if (conns[i].first_ms > 0 && conns[i].opened_ms > 0) snap[ns++] = conns[i].first_ms - conns[i].opened_ms;
    if (conns[i].first_ms > 0) first[nf++] = conns[i].first_ms - conns[i].start_ms;
  }
  qsort(snap, ns, sizeof(float), cmp_float);
  qsort(first, nf, sizeof(float), cmp_float);
  printf("{\"received\":%lld,\"bytes\":%lld,\"binary\":%lld,\"gaps\":%lld,\"outOfOrder\":%lld,"
         "\"open\":%lld,\"closed\":%lld,"
         "\"latency\":{\"count\":%zu,\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},"
         "\"snapshot\":{\"count\":%zu,\"p50\":%.3f,\"p99\":%.3f},"
         "\"first\":{\"count\":%zu,\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
         received, bytes_in, binary_frames, gaps, out_of_order, open_now, closed_count, n_lat, p50, p99, p999, max, ns,
         ns ? snap[(size_t)(ns * 0.5)] : -1, ns ? snap[(size_t)(ns * 0.99)] : -1, nf,
         nf ? first[(size_t)(nf * 0.5)] : -1, nf ? first[(size_t)(nf * 0.99)] : -1,
         nf ? first[nf - 1] : -1);
  fflush(stdout);
  free(snap);
  free(first);
  received = bytes_in = binary_frames = gaps = out_of_order = 0;
  n_lat = 0;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: client PORT N [PATH]\n"); return 2; }
  int port = atoi(argv[1]);
  n_conns = atoi(argv[2]);
  const char *path = argc > 3 ? argv[3] : "/ws/stream";
#ifndef NO_ZLIB
  if (inflateInit2(&inflater, -15) != Z_OK) { fprintf(stderr, "inflateInit2 failed\n"); return 1; }
#endif
  conns = calloc(n_conns, sizeof(conn_t));
  lat = malloc(sizeof(float) * MAX_LAT);
  int ep = epoll_create1(0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  char req[512];
  int reqlen = snprintf(req, sizeof req,
                        "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n", path, port);
  for (int i = 0; i < n_conns; i++) {
    conn_t *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->buf = malloc(BUF);
    c->last_seq = -1;
    c->start_ms = now_ms();
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
      perror("connect");
      return 1;
    }
    c->state = 0; // the request goes out once the socket is writable (connected)
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }
  struct epoll_event in = {.events = EPOLLIN, .data.ptr = NULL};
  fcntl(0, F_SETFL, O_NONBLOCK);
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in);
  printf("{\"ready\":true}\n");
  fflush(stdout);
  struct epoll_event events[1024];
  char line[256];
  size_t line_len = 0;
  for (;;) {
    int n = epoll_wait(ep, events, 1024, 1000);
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == NULL) {
        ssize_t r = read(0, line + line_len, sizeof line - line_len - 1);
        if (r <= 0) return 0;
        line_len += r;
        line[line_len] = 0;
        char *nl;
        while ((nl = strchr(line, '\n'))) {
          *nl = 0;
          if (strcmp(line, "stats") == 0) print_stats();
          if (strcmp(line, "count") == 0) {
            printf("{\"received\":%lld}\n", received);
            fflush(stdout);
          }
          if (strcmp(line, "quit") == 0) return 0;
          size_t rest = line_len - (nl + 1 - line);
          memmove(line, nl + 1, rest);
          line_len = rest;
          line[line_len] = 0;
        }
        continue;
      }
      conn_t *c = events[i].data.ptr;
      if (c->state == 0) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || write(c->fd, req, reqlen) != reqlen) {
          c->state = 3;
          closed_count++;
          close(c->fd);
          continue;
        }
        c->state = 1;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        continue;
      }
      on_readable(c);
    }
  }
}
