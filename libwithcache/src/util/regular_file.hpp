#pragma once

/**
 * @file
 * withcache::util — the one way withcache opens a file of its data dir (a blob, a part file, a resume
 * state) or a part file of `withcache-client get`: never through a symbolic link, never blocking on a
 * FIFO or a device someone planted under the name, and only a regular file with exactly one name.
 *
 * Internal (not installed): the store, the fetcher and the fills share it.
 */

#include <filesystem>
#include <string>

#include <sys/stat.h>
#include <sys/types.h>

#include "withcache/expected.hpp"

namespace withcache::util {

/** Why open_regular() gave no descriptor. */
enum class FileRefusal {
  missing,     ///< nothing at the path (ENOENT)
  symlink,     ///< the name is a symbolic link: never followed
  not_regular, ///< a directory, FIFO, socket or device
  hard_linked, ///< a regular file with more than one name: one of them may be outside the data dir
  failed,      ///< any other failure (permissions, out of descriptors, EEXIST with O_EXCL...): see `error`
};

/** open_regular()'s error: the reason, errno when the open itself failed, and one line for messages. */
struct FileFailure {
  FileRefusal reason = FileRefusal::failed;
  int error = 0;       ///< errno of the failed call; 0 when the file was opened and then refused
  std::string message; ///< e.g. `a symbolic link`, `not a regular file (a FIFO)`, `Permission denied`
};

/** A descriptor open on a regular file, and what fstat(2) said of it when it was opened. */
struct RegularFile {
  int fd = -1;         ///< the caller closes it
  struct stat info {}; ///< as fstat(2) returned it
};

/** What a file that is not a regular one is, for messages: `a directory`, `a FIFO`, `a symbolic link`, ... */
std::string describe_file_type(mode_t mode);

/**
 * open(2)s `path` with `flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (and `mode` when creating), then
 * checks with fstat(2) that it is a regular file with one link; O_NONBLOCK is cleared again unless the
 * caller asked for it. So a FIFO, a device, a directory, a symbolic link or a hard link planted under
 * the name is refused without blocking and without reading a byte of it.
 *
 * Only the last component is protected: the directories on the way (the data dir, blobs/, tmp/) are
 * the operator's. With O_TRUNC the truncation happens before the check: callers that may meet a
 * planted hard link open without it and ftruncate(2) the checked descriptor.
 *
 * @return the descriptor (the caller closes it) and its status, or why not. Thread-safe.
 */
Expected<RegularFile, FileFailure> open_regular(const std::filesystem::path& path, int flags,
                                                mode_t mode = 0600);

} // namespace withcache::util
