/*
 * withcache.h — the C ABI of withcache's client side (SPEC section 5).
 *
 * Conventions (libgit2-style):
 *  - Every function returns int: 0 (WITHCACHE_OK) or a negative WITHCACHE_E* code;
 *    withcache_last_error() then describes the failure (per thread).
 *  - Output parameters come first.
 *  - Strings the library returns are owned by the caller and freed with
 *    withcache_string_free(). Handles are made by _new() and freed by _free().
 *  - No function throws, aborts or keeps a pointer to its arguments after it returns.
 *  - Handles may be used from several threads at once.
 *  - Option structs start with a version field and are initialised with their _INIT macro (or
 *    their _init() function), so that they can grow without breaking callers built against an
 *    older header.
 *  - Each function lists every error code it can return, and what happens to its output on failure.
 */
#ifndef WITHCACHE_H
#define WITHCACHE_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WITHCACHE_C_BUILDING)
#define WITHCACHE_EXTERN __attribute__((visibility("default")))
#else
#define WITHCACHE_EXTERN
#endif

/** Error codes: 0 is success, every failure is negative. */
enum withcache_error {
  WITHCACHE_OK = 0,
  WITHCACHE_EINVAL = -1,    /**< a NULL or otherwise invalid argument */
  WITHCACHE_EURL = -2,      /**< a malformed URL (see withcache_last_error()) */
  WITHCACHE_ENOTFOUND = -3, /**< the cache does not hold the URL (serve_url) */
  WITHCACHE_ENOMEM = -4,    /**< out of memory */
  WITHCACHE_EINTERNAL = -5, /**< an unexpected internal error */
  WITHCACHE_EVERSION = -6   /**< an options struct of a version this library does not know */
};

/** Opaque client: a cache server and probe options. */
typedef struct withcache_client withcache_client;

/** The version of withcache_client_options this header describes. */
#define WITHCACHE_CLIENT_OPTIONS_VERSION 1

/**
 * Options of withcache_client_new(). Initialise with WITHCACHE_CLIENT_OPTIONS_INIT or
 * withcache_client_options_init(), then set what differs from the defaults (zeros mean defaults).
 *
 * withcache 0.4 had no version field (its struct began with timeout_ms); such a struct,
 * zero-initialised, reads as version 0 and keeps working (the headers are at the same offset);
 * one with a non-zero timeout is refused with WITHCACHE_EVERSION and a message that says so.
 */
typedef struct withcache_client_options {
  /** WITHCACHE_CLIENT_OPTIONS_VERSION. */
  unsigned int version;
  /** Probe timeout in milliseconds; 0 means 3000. */
  unsigned int timeout_ms;
  /** Extra request headers as "Name: Value" strings, NULL-terminated; may be NULL. Copied. */
  const char* const* headers;
} withcache_client_options;

/** The defaults, for `withcache_client_options options = WITHCACHE_CLIENT_OPTIONS_INIT;`. */
#define WITHCACHE_CLIENT_OPTIONS_INIT {WITHCACHE_CLIENT_OPTIONS_VERSION, 0, NULL}

/** The library version, e.g. "0.4.0". Static storage: do not free. Cannot fail. */
WITHCACHE_EXTERN const char* withcache_version(void);

/** A short description of an error code. Static storage: do not free. Cannot fail. */
WITHCACHE_EXTERN const char* withcache_strerror(int error);

/**
 * The message of the last failure on this thread ("" when none). Valid until
 * the next withcache_ call on this thread. Do not free. Cannot fail.
 */
WITHCACHE_EXTERN const char* withcache_last_error(void);

/** Frees a string returned by this library. NULL is allowed. Cannot fail. */
WITHCACHE_EXTERN void withcache_string_free(char* string);

/**
 * Sets *options to the defaults of `version` (pass WITHCACHE_CLIENT_OPTIONS_VERSION).
 * Errors: WITHCACHE_EINVAL (NULL options), WITHCACHE_EVERSION (a version this library does not
 * know; *options untouched).
 */
WITHCACHE_EXTERN int withcache_client_options_init(withcache_client_options* options, unsigned int version);

/**
 * The cache key of an origin URL (the normalised URL; SPEC section 2).
 * keep_query: non-zero keeps the whole query string; zero keeps it without its signing and
 * credential parameters (X-Amz-*, token, sig, ...). *out: caller frees with withcache_string_free().
 * Errors: WITHCACHE_EINVAL (NULL out or url), WITHCACHE_EURL (a malformed URL), WITHCACHE_ENOMEM,
 * WITHCACHE_EINTERNAL. On failure *out is NULL (unless out itself is).
 */
WITHCACHE_EXTERN int withcache_normalize_key(char** out, const char* url, int keep_query);

/**
 * The cache URL of origin at server: <server>/b/<token>/<name>[?<query>], where <name> is the
 * origin's last path segment byte for byte and <query> the origin's query (SPEC section 2).
 * *out: caller frees with withcache_string_free().
 * Errors: WITHCACHE_EINVAL (NULL out, server or origin), WITHCACHE_ENOMEM, WITHCACHE_EINTERNAL.
 * On failure *out is NULL (unless out itself is).
 */
WITHCACHE_EXTERN int withcache_blob_url(char** out, const char* server, const char* origin);

/**
 * A client for server ("host", "host:3000" or "http://host:3000/").
 * options may be NULL (the defaults). *out: free with withcache_client_free().
 * Errors: WITHCACHE_EINVAL (NULL out, NULL or empty server, a header without ':'),
 * WITHCACHE_EVERSION (options of an unknown version), WITHCACHE_ENOMEM, WITHCACHE_EINTERNAL.
 * On failure *out is NULL (unless out itself is, or server is NULL or empty).
 */
WITHCACHE_EXTERN int withcache_client_new(withcache_client** out, const char* server,
                                          const withcache_client_options* options);

/** Frees a client. NULL is allowed. Cannot fail. */
WITHCACHE_EXTERN void withcache_client_free(withcache_client* client);

/**
 * *out_cached = 1 when the cache holds origin, else 0 (a miss, an error, a
 * timeout — never a failure code for network reasons). A probe also warms an
 * auto-fetch server. Errors: WITHCACHE_EINVAL (NULL out_cached, client or origin),
 * WITHCACHE_ENOMEM, WITHCACHE_EINTERNAL. On failure *out_cached is untouched.
 */
WITHCACHE_EXTERN int withcache_client_is_cached(int* out_cached, withcache_client* client,
                                                const char* origin);

/**
 * *out = the cache URL when the cache holds origin (caller frees with
 * withcache_string_free()); WITHCACHE_ENOTFOUND when it does not (download
 * from the origin then). Errors: WITHCACHE_EINVAL (NULL out, client or origin),
 * WITHCACHE_ENOTFOUND, WITHCACHE_ENOMEM, WITHCACHE_EINTERNAL. On failure *out is NULL (unless out
 * itself is).
 */
WITHCACHE_EXTERN int withcache_client_serve_url(char** out, withcache_client* client, const char* origin);

/**
 * *out_healthy = 1 when the server's /healthz answers 200, else 0. Errors: WITHCACHE_EINVAL (NULL
 * out_healthy or client), WITHCACHE_ENOMEM, WITHCACHE_EINTERNAL. On failure *out_healthy is untouched.
 */
WITHCACHE_EXTERN int withcache_client_is_healthy(int* out_healthy, withcache_client* client);

#ifdef __cplusplus
}
#endif

#endif /* WITHCACHE_H */
