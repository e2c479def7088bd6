/* Fails bind() with EADDRINUSE on many ports at once, for tcptrace's
 * --timewait rate-limit test: each (pid, port) is a new failure to explain.
 *
 * usage: bind_storm PORT N
 *   Listens on PORT .. PORT+N-1, then binds each port again from a second
 *   socket (EADDRINUSE), as fast as it can. Prints "failed K" and exits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in at(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT N\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]), failed = 0;
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = at(port + i);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) {
            perror("listen");
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        struct sockaddr_in a = at(port + i);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (bind(s, (struct sockaddr *)&a, sizeof a) && errno == EADDRINUSE) failed++;
        close(s);
    }
    printf("failed %d\n", failed);
    return 0;
}
