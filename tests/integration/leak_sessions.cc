// leak_sessions.cc - a plain C++ program that leaks, for test_symbolize.sh.
//
// SessionTable::open keeps, per call, a Session (new) with a std::string
// name of 95 characters and a 1400-byte buffer (new char[]): about 1.5 KB
// never freed.  Like leak_sessions.c it finds sm_write_heap_profile with
// dlsym and writes DIR/p1.pb.gz and DIR/p2.pb.gz after two phases.
//
// Usage: leak_sessions_cc DIR N [wait]
// With "wait", as leak_sessions.c: DIR/p1.ready, then wait for DIR/p1.go.
#include <dlfcn.h>
#include <time.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct Session {
    std::string name;
    char *buf;
};

class SessionTable {
public:
    void open(int id);
    size_t size() const { return sessions_.size(); }
private:
    std::vector<Session *> sessions_;
};

void SessionTable::open(int id)
{
    Session *s = new Session;
    s->name = std::string(95, static_cast<char>('a' + id % 26));
    s->buf = new char[1400];
    s->buf[0] = static_cast<char>(id);
    sessions_.push_back(s);
}

static bool waiting;

static void profile(const char *dir, const char *name)
{
    if (waiting) {
        std::string stem = std::string(dir) + "/" + std::string(name, 2);
        std::fclose(std::fopen((stem + ".ready").c_str(), "w"));
        for (int i = 0; i < 6000 && access((stem + ".go").c_str(), F_OK) != 0; i++) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, nullptr);
        }
        return;
    }
    auto write_profile = reinterpret_cast<int (*)(const char *)>(
        dlsym(RTLD_DEFAULT, "sm_write_heap_profile"));
    std::string path = std::string(dir) + "/" + name;
    if (write_profile == nullptr || write_profile(path.c_str()) != 0)
        std::fprintf(stderr, "leak_sessions_cc: no profile %s\n", path.c_str());
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && std::strcmp(argv[3], "wait") == 0))
        return 2;
    waiting = argc == 4;
    int n = std::atoi(argv[2]);
    SessionTable table;
    for (int i = 0; i < n; i++)
        table.open(i);
    profile(argv[1], "p1.pb.gz");
    for (int i = 0; i < n; i++)
        table.open(n + i);
    profile(argv[1], "p2.pb.gz");
    // The string's heap block is its capacity + 1.
    std::printf("session_bytes %zu\nsessions_per_phase %d\n",
                sizeof(Session) + 96 + 1400, n);
    return table.size() == 2 * static_cast<size_t>(n) ? 0 : 1;
}
