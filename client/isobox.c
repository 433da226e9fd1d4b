/*
 * isobox's compiled front end: the `isobox` program when a C compiler was
 * there at install time (scripts/build-client.sh builds it).
 *
 * A command goes to the root's warm command server (isobox.engine.resident,
 * which documents the protocol) exactly as the Python front end sends it;
 * this program only saves the Python start-up (8-12 ms of every command).
 * Whenever the server does not take the command (none yet, a stale one,
 * options it cannot tell the root from, a caller it refuses), this program
 * execs the Python front end, which decides again and runs the command
 * itself. It therefore holds no logic of its own beyond finding the socket
 * and relaying: anything it cannot do the way the Python front end would,
 * it leaves to it.
 *
 * Built with, from scripts/build-client.sh:
 *   ISOBOX_FALLBACK  the Python front end (bin/isobox as installed)
 *   ISOBOX_SRC       the installation's identity, as
 *   ISOBOX_PYTHON    isobox.linux.forkserver.identity() gives it
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#if !defined(ISOBOX_FALLBACK) || !defined(ISOBOX_SRC) || !defined(ISOBOX_PYTHON)
#error "build with scripts/build-client.sh: it defines ISOBOX_FALLBACK, ISOBOX_SRC, ISOBOX_PYTHON"
#endif

/* What isobox.engine.resident and isobox.engine.defaults name. */
#define SOCKET_NAME "cli-server.sock"
#define DISABLE_ENV "ISOBOX_CLI_SERVER"
#define ROOT_ENV "ISOBOX_ROOT"
#define SETTINGS_ENV "ISOBOX_DAEMON_CONFIG"
#define DEFAULT_RUN_ROOT "/run/isobox"
#define DEFAULT_SETTINGS_FILE "/etc/isobox/daemon.json"
#define MAX_REQUEST (256 * 1024)
#define RLIMITS 16
#define LOST "Error: the isobox command server stopped before the command finished\n"

/* Signals passed on to the worker (resident.FORWARDED). */
static const int FORWARDED[] = {1, 2, 3, 10, 12, 14, 15, 18, 20, 23, 24, 25, 26, 27, 28, 29, 30};
#define NFORWARDED (sizeof(FORWARDED) / sizeof(FORWARDED[0]))

extern char **environ;
static char **program_argv;
static int worker_pidfd = -1;

/* Run the command in the Python front end instead: it asks the server again
 * and, refused, runs the command in its own interpreter. */
static void fall_back(void)
{
    execv(ISOBOX_FALLBACK, program_argv);
    dprintf(2, "Error: cannot run isobox's front end %s: %s\n", ISOBOX_FALLBACK, strerror(errno));
    _exit(125);
}

/* ---------------------------------------------------------------- the request */

struct buffer {
    char *data;
    size_t len, cap;
};

/* One item of the request: items are joined by NUL, as "\0".join(...). */
static void add(struct buffer *b, const char *key, const char *value)
{
    size_t need = (b->len ? 1 : 0) + strlen(key) + strlen(value);
    if (b->len + need > MAX_REQUEST)
        fall_back(); /* too large to send: the Python front end says so and runs it */
    if (b->len + need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + need + 1)
            cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown)
            fall_back();
        b->data = grown;
        b->cap = cap;
    }
    if (b->len)
        b->data[b->len++] = '\0';
    b->len += (size_t)sprintf(b->data + b->len, "%s%s", key, value);
}

/* os.path.normpath of an absolute path, in place. */
static void normalize(char *path)
{
    int slashes = (path[0] == '/' && path[1] == '/' && path[2] != '/') ? 2 : 1;
    char *copy = strdup(path);
    char **parts = malloc((strlen(path) / 2 + 1) * sizeof *parts);
    if (!copy || !parts)
        fall_back();
    size_t n = 0;
    char *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (strcmp(part, "..") == 0) {
            if (n) /* above the root is the root */
                n--;
        } else if (strcmp(part, ".") != 0) {
            parts[n++] = part;
        }
    }
    char *out = path + slashes;
    memset(path, '/', (size_t)slashes);
    for (size_t i = 0; i < n; i++) {
        if (i)
            *out++ = '/';
        size_t len = strlen(parts[i]);
        memcpy(out, parts[i], len);
        out += len;
    }
    *out = '\0';
    free(parts);
    free(copy);
}

/* The command server's socket for this command line (resident.socket_path);
 * NULL when the top-level options are not plain enough to tell. */
static char *socket_path(int argc, char **argv)
{
    const char *root = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--root") == 0) {
            if (++i >= argc)
                return NULL;
            root = argv[i];
        } else if (strncmp(arg, "--root=", 7) == 0) {
            root = arg + 7;
        } else if (strcmp(arg, "--insecure-registry") == 0) {
            i++;
        } else if (strncmp(arg, "--insecure-registry=", 20) == 0) {
            continue;
        } else if (arg[0] == '-' && strcmp(arg, "-h") && strcmp(arg, "--help") &&
                   strcmp(arg, "-v") && strcmp(arg, "--version")) {
            return NULL; /* an option click will judge */
        } else {
            break; /* the verb: what follows is its own */
        }
    }
    if (!root || !*root)
        root = getenv(ROOT_ENV);
    char *path;
    if (root && *root) {
        char cwd[PATH_MAX];
        char joined[2 * PATH_MAX + 2];
        if (root[0] == '/') {
            snprintf(joined, sizeof joined, "%s", root);
        } else {
            if (!getcwd(cwd, sizeof cwd))
                return NULL;
            snprintf(joined, sizeof joined, "%s/%s", cwd, root);
        }
        normalize(joined);
        if (asprintf(&path, "%s%srun/" SOCKET_NAME, joined,
                     joined[strlen(joined) - 1] == '/' ? "" : "/") < 0)
            return NULL;
    } else if (asprintf(&path, DEFAULT_RUN_ROOT "/" SOCKET_NAME) < 0) {
        return NULL;
    }
    return path;
}

/* The request resident._request builds: identity, umask, settings file,
 * rlimits, ignored signals, argv, environment. */
static struct buffer request(int argc, char **argv)
{
    struct buffer b = {0};
    char value[96];
    add(&b, "src=", ISOBOX_SRC);
    add(&b, "python=", ISOBOX_PYTHON);
    mode_t mask = umask(022);
    umask(mask);
    snprintf(value, sizeof value, "%o", (unsigned)mask);
    add(&b, "umask=", value);
    const char *settings = getenv(SETTINGS_ENV);
    add(&b, "settings=", settings && *settings ? settings : DEFAULT_SETTINGS_FILE);
    for (int which = 0; which < RLIMITS; which++) {
        struct rlimit limit;
        if (getrlimit(which, &limit) < 0)
            fall_back();
        snprintf(value, sizeof value, "%d:%lld:%lld", which, (long long)limit.rlim_cur,
                 (long long)limit.rlim_max);
        add(&b, "rlimit=", value);
    }
    for (size_t i = 0; i < NFORWARDED; i++) {
        struct sigaction now;
        if (sigaction(FORWARDED[i], NULL, &now) == 0 && now.sa_handler == SIG_IGN) {
            snprintf(value, sizeof value, "%d", FORWARDED[i]);
            add(&b, "ign=", value);
        }
    }
    for (int i = 0; i < argc; i++)
        add(&b, "arg=", argv[i]);
    for (char **env = environ; *env; env++)
        if (strchr(*env, '='))
            add(&b, "env=", *env);
    return b;
}

/* ---------------------------------------------------------------- talking to the server */

static int connect_to(const char *path)
{
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int dirfd = -1;
    if (strlen(path) > 100) { /* sun_path: reach it through its directory */
        char *dir = strdup(path);
        if (!dir)
            goto fail;
        *strrchr(dir, '/') = '\0';
        dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        free(dir);
        if (dirfd < 0)
            goto fail;
        snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/%s", dirfd,
                 strrchr(path, '/') + 1);
    } else {
        snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    }
    int ok = connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0;
    if (dirfd >= 0)
        close(dirfd);
    if (ok)
        return sock;
fail:
    close(sock);
    return -1;
}

/* Send the request with our stdin, stdout, stderr and working directory. */
static int send_request(int sock, const struct buffer *b)
{
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd < 0)
        return -1;
    int fds[4] = {0, 1, 2, cwd};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof fds)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    close(cwd);
    return sent == (ssize_t)b->len ? 0 : -1;
}

/* The server's answer (NUL-terminated) and the pidfd it carries, if any. */
static ssize_t receive(int sock, char *answer, size_t size, int *fd)
{
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int))];
    } control;
    struct iovec iov = {.iov_base = answer, .iov_len = size - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    *fd = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return n;
    answer[n] = '\0';
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int *got = (int *)CMSG_DATA(c);
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                if (*fd < 0)
                    *fd = got[i];
                else
                    close(got[i]);
            }
        }
    return n;
}

/* The status an end message carries: "exit N" as N, "signal N" as -N; 1 if
 * it is one, 0 if not (resident._final). */
static int final_status(const char *message, int *status)
{
    const char *digits;
    int sign;
    if (strncmp(message, "exit ", 5) == 0) {
        digits = message + 5;
        sign = 1;
    } else if (strncmp(message, "signal ", 7) == 0) {
        digits = message + 7;
        sign = -1;
    } else {
        return 0;
    }
    if (!*digits || strspn(digits, "0123456789") != strlen(digits) || strlen(digits) > 9)
        return 0;
    *status = sign * atoi(digits);
    return 1;
}

static void pass_on(int sig)
{
    int saved = errno;
    if (syscall(SYS_pidfd_send_signal, worker_pidfd, sig, NULL, 0) == 0 && sig == SIGTSTP)
        kill(getpid(), SIGSTOP); /* stop with it, as the command's own process would */
    errno = saved;
}

/* Pass our signals on to the worker until the server reports its end. */
static int relay(int sock)
{
    struct sigaction action = {.sa_handler = pass_on}; /* no SA_RESTART: recv sees EINTR */
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < NFORWARDED; i++) {
        struct sigaction now;
        if (sigaction(FORWARDED[i], NULL, &now) == 0 && now.sa_handler != SIG_IGN)
            sigaction(FORWARDED[i], &action, NULL);
    }
    char end[65];
    ssize_t n;
    do
        n = recv(sock, end, sizeof end - 1, 0);
    while (n < 0 && errno == EINTR);
    int status;
    if (n >= 0) {
        end[n] = '\0';
        if (final_status(end, &status))
            return status;
    }
    if (write(2, LOST, sizeof LOST - 1) < 0) {
        /* nothing more to say it with */
    }
    return 125;
}

/* Exit the way the worker did: its code, or killed by its signal. */
static void leave(int status)
{
    if (status >= 0)
        _exit(status);
    int sig = -status;
    if (sig != SIGKILL && sig != SIGSTOP)
        signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), sig);
    _exit(128 + sig); /* a signal whose default is not to die */
}

int main(int argc, char **argv)
{
    program_argv = argv;
    const char *off = getenv(DISABLE_ENV);
    if (off && strcmp(off, "0") == 0)
        fall_back();
    char *path = socket_path(argc, argv);
    if (!path)
        fall_back();
    int sock = connect_to(path);
    if (sock < 0)
        fall_back();
    struct buffer b = request(argc, argv);
    if (send_request(sock, &b) < 0)
        fall_back();
    free(b.data);
    char answer[257];
    int pidfd, status;
    if (receive(sock, answer, sizeof answer, &pidfd) < 0)
        fall_back();
    if (final_status(answer, &status)) /* the worker was done before the server said "pid" */
        leave(status);
    if (strcmp(answer, "pid") != 0 || pidfd < 0) {
        if (pidfd >= 0)
            close(pidfd);
        close(sock);
        fall_back(); /* stale, refused: the Python front end knows what to do */
    }
    worker_pidfd = pidfd;
    leave(relay(sock));
}
