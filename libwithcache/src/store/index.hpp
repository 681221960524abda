#pragma once

// The store's in-memory index of artifacts: what the read path needs to
// answer a hit without SQLite, in about 90 bytes an artifact, so that a
// million artifacts fit in a few tens of MiB (docs/architecture.md "The
// store"). Internal to withcache::store; not thread-safe (BlobStore guards
// it with its index lock).
//
// Layout: a sorted array of fixed-size records keyed by the 32-byte binary
// key id, in memory mapped with mmap and grown with mremap (so growing it
// never holds two copies), plus a small sorted overlay of keys added since
// the last merge. Replacing or removing a key already in the array works in
// place (a removal leaves a tombstone); merges fold the overlay in and drop
// tombstones in place, from the back, without a second array.

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace withcache::store::detail {

/** A key id or a SHA-256, as 32 bytes. */
using Digest = std::array<std::uint8_t, 32>;

/** The 32 bytes of a 64-digit lower-case hex string; nothing for anything else. */
std::optional<Digest> digest_from_hex(std::string_view hex);
/** 64 lower-case hex digits. */
std::string digest_hex(const Digest& digest);

/** One artifact as the read path needs it. Trivially copyable, 88 bytes. */
struct IndexRecord {
  Digest key{};
  Digest sha256{};
  std::uint32_t size_low = 0;
  std::uint32_t size_high = 0;
  std::uint32_t fetched_at = 0;  ///< Unix seconds (until 2106)
  std::uint32_t fresh_until = 0; ///< Unix seconds; 0 = never revalidate
  std::uint32_t type : 31 = 0;   ///< interned content type (CompactIndex::type_name)
  std::uint32_t removed : 1 = 0; ///< a tombstone, dropped at the next merge
  std::uint32_t extras = 0;      ///< 1 + index of the rarely set header strings; 0 = none

  [[nodiscard]] std::uint64_t size() const noexcept {
    return (static_cast<std::uint64_t>(size_high) << 32) | size_low;
  }
  void set_size(std::uint64_t bytes) noexcept {
    size_low = static_cast<std::uint32_t>(bytes);
    size_high = static_cast<std::uint32_t>(bytes >> 32);
  }
};

/** An array of trivially copyable records in anonymous memory that grows with mremap (no copy, no 2x peak). */
class MappedArray {
 public:
  MappedArray() = default;
  ~MappedArray();
  MappedArray(const MappedArray&) = delete;
  MappedArray& operator=(const MappedArray&) = delete;

  [[nodiscard]] IndexRecord* data() noexcept { return m_data; }
  [[nodiscard]] const IndexRecord* data() const noexcept { return m_data; }
  [[nodiscard]] std::size_t size() const noexcept { return m_size; }
  /** Makes room for `count` records. @throws std::bad_alloc */
  void reserve(std::size_t count);
  /** Grows or shrinks to `count` records (new ones zeroed). @throws std::bad_alloc */
  void resize(std::size_t count);
  void push_back(const IndexRecord& record);
  /** Bytes mapped (what the array may occupy in RSS). */
  [[nodiscard]] std::size_t mapped_bytes() const noexcept { return m_mapped; }

 private:
  IndexRecord* m_data = nullptr;
  std::size_t m_size = 0;
  std::size_t m_capacity = 0;
  std::size_t m_mapped = 0;
};

/** The header strings an artifact rarely carries or rarely needs in memory. */
struct Extras {
  std::string content_encoding;
  std::string content_disposition;
  // Kept only for artifacts that will be revalidated (fresh_until != 0).
  std::string etag;
  std::string last_modified;
  std::string cache_control;
  std::string expires;
  [[nodiscard]] bool empty() const noexcept {
    return content_encoding.empty() && content_disposition.empty() && etag.empty() && last_modified.empty() &&
           cache_control.empty() && expires.empty();
  }
};

class CompactIndex {
 public:
  /** Adds a record while loading, in any order; call finish_load() before any lookup. */
  void load(const IndexRecord& record) { m_sorted.push_back(record); }
  /** Sorts what load() added and drops duplicate keys (the last one wins). */
  void finish_load();
  void reserve(std::size_t count) { m_sorted.reserve(count); }

  /** The live record of `key`, or nullptr. The pointer is valid until the next change. */
  [[nodiscard]] const IndexRecord* find(const Digest& key) const;
  /** Adds or replaces the record of its key (its old extras are released). */
  void upsert(const IndexRecord& record);
  /** Removes `key`'s record (its extras are released). @return false when there was none. */
  bool erase(const Digest& key);
  /** Artifacts indexed. */
  [[nodiscard]] std::size_t size() const noexcept { return m_live; }
  /** The smallest live key greater than `after` (or the smallest of all), for walking every artifact. */
  [[nodiscard]] std::optional<Digest> next_key(const std::optional<Digest>& after) const;

  /** The id of a content type (the same string always gets the same id). */
  std::uint32_t intern_type(std::string_view type);
  [[nodiscard]] const std::string& type_name(std::uint32_t id) const;
  /** Stores extras and returns the value for IndexRecord::extras (0 when `extras` is empty). */
  std::uint32_t add_extras(const Extras& extras);
  /** The extras of a record's `extras` value (empty for 0). */
  [[nodiscard]] Extras extras(std::uint32_t id) const;

  /** Bytes the index occupies, roughly: the array, the overlay, the strings. */
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

  /** Folds the overlay into the array and drops tombstones, when they have grown large enough. */
  void maybe_merge();
  /** The same, now (tests). */
  void merge();

 private:
  IndexRecord* find_sorted(const Digest& key);
  [[nodiscard]] const IndexRecord* find_sorted(const Digest& key) const;
  void release_extras(std::uint32_t id);

  MappedArray m_sorted;
  std::size_t m_tombstones = 0;
  std::map<Digest, IndexRecord> m_overlay; // keys not in m_sorted
  std::size_t m_live = 0;

  std::vector<std::string> m_types{std::string()}; // id 0 = no content type
  std::unordered_map<std::string, std::uint32_t> m_type_ids;
  std::vector<std::string> m_extras; // encoded Extras; empty slots are free
  std::vector<std::uint32_t> m_free_extras;
  std::size_t m_extras_bytes = 0;
};

} // namespace withcache::store::detail
