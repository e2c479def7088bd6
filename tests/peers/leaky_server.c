/* A server that leaks CLOSE_WAIT sockets in two distinct ways, for tcptrace's
 * --closewait-leaks tests. Build with frame pointers:
 *   cc -O0 -g -fno-omit-frame-pointer -o leaky_server leaky_server.c
 *
 * usage: leaky_server PORT [SECONDS [COMM]]
 *   PORT   -> leaky_eof_handler:    reads to EOF, never closes
 *   PORT+1 -> leaky_noread_handler: reads the request once, never again
 *   PORT+2 -> good_handler:         reads to EOF and closes
 * With COMM, renames itself COMM (prctl(PR_SET_NAME), at most 15 bytes kept)
 * before listening. Prints "ready <pid>" once listening; exits after SECONDS
 * (default 120).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_KEPT 4096
static int kept[MAX_KEPT]; /* leaked fds stay open here */
static int nkept;

static void keep(int fd) {
    if (nkept < MAX_KEPT) kept[nkept++] = fd;
}

/* Reads the request and then to EOF, and forgets to close. */
__attribute__((noinline)) void leaky_eof_handler(int fd) {
    char buf[256];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    keep(fd); /* bug: no close(fd) */
}

/* Reads the request once, never reads again, never closes. */
__attribute__((noinline)) void leaky_noread_handler(int fd) {
    char buf[256];
    (void)recv(fd, buf, sizeof buf, 0);
    keep(fd); /* bug: no close(fd), FIN never consumed */
}

/* Reads to EOF and closes: the well-behaved path. */
__attribute__((noinline)) void good_handler(int fd) {
    char buf[256];
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }
    close(fd);
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
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SECONDS [COMM]]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int seconds = argc > 2 ? atoi(argv[2]) : 120;
    if (argc > 3 && prctl(PR_SET_NAME, argv[3], 0, 0, 0)) {
        perror("prctl(PR_SET_NAME)");
        return 1;
    }
    struct pollfd p[3];
    for (int i = 0; i < 3; i++) {
        p[i].fd = listen_on(port + i);
        p[i].events = POLLIN;
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        if (poll(p, 3, 200) <= 0) continue;
        for (int i = 0; i < 3; i++) {
            if (!(p[i].revents & POLLIN)) continue;
            int fd = accept(p[i].fd, NULL, NULL);
            if (fd < 0) continue;
            if (i == 0) leaky_eof_handler(fd);
            else if (i == 1) leaky_noread_handler(fd);
            else good_handler(fd);
        }
    }
    return 0;
}
