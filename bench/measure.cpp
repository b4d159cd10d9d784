// measure: runs a command and writes its CPU time and peak RSS, from wait4, to a file.
//
//   measure RESULT_FILE COMMAND [ARGS...]     → RESULT_FILE: "user_us sys_us maxrss_kib exit_code\n"
//
// Why not measure from scripts/bench directly: Linux carries a process's peak RSS across
// fork and exec (exec_mmap folds the old address space's high-water mark into the new
// one), so a child forked from a Python process that holds 180 MiB of parsed records
// "peaks" at 180 MiB whatever it runs. Forked from this small program, the figure is the
// command's own. Stdin, stdout and stderr are the command's.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: measure RESULT_FILE COMMAND [ARGS...]\n");
    return 2;
  }
  pid_t pid = fork();
  if (pid < 0) {
    std::fprintf(stderr, "measure: fork: %s\n", std::strerror(errno));
    return 1;
  }
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    std::fprintf(stderr, "measure: cannot run %s: %s\n", argv[2], std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) {
      std::fprintf(stderr, "measure: wait4: %s\n", std::strerror(errno));
      return 1;
    }
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::FILE* out = std::fopen(argv[1], "w");
  if (out == nullptr) {
    std::fprintf(stderr, "measure: cannot write %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  std::fprintf(out, "%lld %lld %ld %d\n",
               static_cast<long long>(usage.ru_utime.tv_sec) * 1000000 + usage.ru_utime.tv_usec,
               static_cast<long long>(usage.ru_stime.tv_sec) * 1000000 + usage.ru_stime.tv_usec, usage.ru_maxrss,
               code);
  return std::fclose(out) == 0 ? 0 : 1;
}
