/* A CLOSE_WAIT leaker that turns the symbolizer's own inputs against it, for
 * tcptrace's symbolizer tests. Build with frame pointers:
 *   cc -O0 -g -fno-omit-frame-pointer -o hostile_server hostile_server.c
 *
 * usage: hostile_server PORT SECONDS MODE [PATH]
 *   Every connection to PORT goes to leak_handler: read to EOF, never close.
 *   MODE plain:      nothing else (a well-behaved -g leaker).
 *   MODE perf-fifo:  the handler is called through a trampoline in anonymous
 *                    executable memory (as JIT code is), and
 *                    /tmp/perf-<pid>.map, which names such code, is a FIFO.
 *   MODE perf-lease: the same trampoline, and /tmp/perf-<pid>.map is a
 *                    regular file on which this process holds a write lease:
 *                    anyone else's open() of it blocks (lease-break-time,
 *                    45 s by default).
 *   MODE lease PATH: hold a write lease on PATH (e.g. the target of this
 *                    binary's .gnu_debuglink).
 * Prints "ready <pid>" once listening; exits after SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEPT 4096
static int kept[MAX_KEPT];
static int nkept;

/* Reads to EOF and forgets to close. */
__attribute__((noinline)) void leak_handler(long fd) {
    char buf[256];
    while (recv((int)fd, buf, sizeof buf, 0) > 0) {
    }
    if (nkept < MAX_KEPT) kept[nkept++] = (int)fd; /* bug: no close(fd) */
}

typedef void (*handler_t)(long);
typedef void (*tramp_t)(handler_t, long);

/* tramp(f, arg): push %rbp; mov %rsp,%rbp; mov %rdi,%rax; mov %rsi,%rdi;
 * call *%rax; pop %rbp; ret. A frame-pointer frame of its own, so a stack
 * walk passes through anonymous memory. */
static tramp_t make_trampoline(void) {
    static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0x48, 0x89, 0xf8, 0x48,
                                         0x89, 0xf7, 0xff, 0xd0, 0x5d, 0xc3};
    void *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memcpy(mem, code, sizeof code);
    return (tramp_t)mem;
}

static void hold_lease(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fcntl(fd, F_SETLEASE, F_WRLCK) != 0) {
        perror("lease");
        exit(1);
    }
    /* kept open: the lease lives as long as the fd */
}

static int listen_on(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1024)) {
        perror("bind/listen");
        exit(1);
    }
    return s;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s PORT SECONDS MODE [PATH]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int seconds = atoi(argv[2]);
    const char *mode = argv[3];
    tramp_t tramp = NULL;
    char perf_map[64];
    snprintf(perf_map, sizeof perf_map, "/tmp/perf-%d.map", (int)getpid());
    /* A lease break signals the holder; it must not kill it. */
    signal(SIGIO, SIG_IGN);
    if (!strcmp(mode, "perf-fifo")) {
        tramp = make_trampoline();
        if (mkfifo(perf_map, 0644)) {
            perror("mkfifo");
            return 1;
        }
    } else if (!strcmp(mode, "perf-lease")) {
        tramp = make_trampoline();
        FILE *f = fopen(perf_map, "w");
        if (!f) {
            perror(perf_map);
            return 1;
        }
        fprintf(f, "%lx 100 jitted_leak_path\n", (unsigned long)tramp);
        fclose(f);
        hold_lease(perf_map);
    } else if (!strcmp(mode, "lease") && argc > 4) {
        hold_lease(argv[4]);
    } else if (strcmp(mode, "plain")) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    int l = listen_on(port);
    struct pollfd p = {.fd = l, .events = POLLIN};
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        if (poll(&p, 1, 200) <= 0) continue;
        int fd = accept(l, NULL, NULL);
        if (fd < 0) continue;
        if (tramp) tramp(leak_handler, fd);
        else leak_handler(fd);
    }
    if (tramp) unlink(perf_map);
    return 0;
}
