// An OpenSSL BIO over a non-blocking socket that sends with MSG_NOSIGNAL. OpenSSL's own socket BIO
// write()s, so a peer that closes mid-handshake or mid-request would kill a process that does not
// ignore SIGPIPE — and libwithcache_client runs inside other people's programs. Used by the probe and
// by origin::HttpConnection. Internal to libwithcache.
#pragma once

#include <openssl/bio.h>

namespace withcache::client {

/** A new BIO on `fd` (not owned: the caller closes it), or nullptr. SSL_set_bio() takes it. */
BIO* nosignal_socket_bio(int fd);

} // namespace withcache::client
