#include "util/regular_file.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace withcache::util {
namespace {

FileFailure refused(FileRefusal reason, std::string message, int error = 0) {
  return FileFailure{reason, error, std::move(message)};
}

} // namespace

std::string describe_file_type(mode_t mode) {
  if (S_ISREG(mode)) {
    return "a regular file";
  }
  if (S_ISLNK(mode)) {
    return "a symbolic link";
  }
  if (S_ISDIR(mode)) {
    return "a directory";
  }
  if (S_ISFIFO(mode)) {
    return "a FIFO";
  }
  if (S_ISSOCK(mode)) {
    return "a socket";
  }
  if (S_ISCHR(mode) || S_ISBLK(mode)) {
    return "a device";
  }
  return "of an unknown type";
}

Expected<RegularFile, FileFailure> open_regular(const std::filesystem::path& path, int flags, mode_t mode) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever, on whatever
  // thread asked (an I/O thread, the scrub's, a worker's). O_NOFOLLOW: a link is never a blob.
  const int fd = ::open(path.c_str(), flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode);
  if (fd < 0) {
    const int error = errno;
    switch (error) {
    case ENOENT:
      return unexpected(refused(FileRefusal::missing, "missing", error));
    case ELOOP:
      return unexpected(refused(FileRefusal::symlink, "a symbolic link", error));
    case EISDIR:
      return unexpected(refused(FileRefusal::not_regular, "not a regular file (a directory)", error));
    case ENXIO: // a FIFO without a reader opened for writing, or a socket
      return unexpected(refused(FileRefusal::not_regular, "not a regular file", error));
    default:
      return unexpected(refused(FileRefusal::failed, std::strerror(error), error));
    }
  }
  RegularFile file;
  file.fd = fd;
  if (::fstat(fd, &file.info) != 0) {
    const int error = errno;
    ::close(fd);
    return unexpected(refused(FileRefusal::failed, std::strerror(error), error));
  }
  if (!S_ISREG(file.info.st_mode)) {
    ::close(fd);
    return unexpected(refused(FileRefusal::not_regular,
                              "not a regular file (" + describe_file_type(file.info.st_mode) + ")"));
  }
  // withcache renames its files into place and never links them: a second name is someone else's,
  // possibly for a file outside the data dir (a secret, or a file another program still writes).
  if (file.info.st_nlink > 1) {
    ::close(fd);
    return unexpected(refused(FileRefusal::hard_linked,
                              "a hard link (" + std::to_string(file.info.st_nlink) + " names for one file)"));
  }
  if ((flags & O_NONBLOCK) == 0) {
    const int status = ::fcntl(fd, F_GETFL);
    if (status < 0 || ::fcntl(fd, F_SETFL, status & ~O_NONBLOCK) != 0) {
      const int error = errno;
      ::close(fd);
      return unexpected(refused(FileRefusal::failed, std::strerror(error), error));
    }
  }
  return file;
}

} // namespace withcache::util
