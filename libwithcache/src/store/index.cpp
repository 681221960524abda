#include "store/index.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>

#include <sys/mman.h>
#include <unistd.h>


namespace withcache::store::detail {

static_assert(std::is_trivially_copyable_v<IndexRecord>);
static_assert(sizeof(IndexRecord) == 88, "the index record is meant to stay small");

namespace {

// The first 8 bytes decide nearly every comparison of random keys: compare them as one number.
std::uint64_t prefix(const Digest& key) {
  std::uint64_t value = 0;
  std::memcpy(&value, key.data(), sizeof value);
  return __builtin_bswap64(value);
}

bool key_less(const IndexRecord& a, const IndexRecord& b) {
  const std::uint64_t pa = prefix(a.key);
  const std::uint64_t pb = prefix(b.key);
  return pa != pb ? pa < pb : a.key < b.key;
}

std::size_t page_size() {
  static const auto size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

// Extras are stored as one string: each field as a 4-byte length and its bytes.
void put(std::string& out, const std::string& field) {
  const auto length = static_cast<std::uint32_t>(field.size());
  out.append(reinterpret_cast<const char*>(&length), sizeof length);
  out += field;
}

std::string take(std::string_view& in) {
  std::uint32_t length = 0;
  if (in.size() < sizeof length) {
    return {};
  }
  std::memcpy(&length, in.data(), sizeof length);
  in.remove_prefix(sizeof length);
  const std::size_t n = std::min<std::size_t>(length, in.size());
  std::string field(in.substr(0, n));
  in.remove_prefix(n);
  return field;
}

} // namespace

std::optional<Digest> digest_from_hex(std::string_view hex) {
  // 0-15 for '0'-'9' and 'a'-'f', 0xFF for anything else (upper case included: keys are lower-case).
  static constexpr auto k_values = [] {
    std::array<std::uint8_t, 256> values{};
    values.fill(0xFF);
    for (int c = '0'; c <= '9'; ++c) {
      values[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - '0');
    }
    for (int c = 'a'; c <= 'f'; ++c) {
      values[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - 'a' + 10);
    }
    return values;
  }();
  if (hex.size() != 64) {
    return std::nullopt;
  }
  Digest out{};
  std::uint8_t bad = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint8_t high = k_values[static_cast<unsigned char>(hex[2 * i])];
    const std::uint8_t low = k_values[static_cast<unsigned char>(hex[2 * i + 1])];
    bad |= static_cast<std::uint8_t>((high | low) & 0xF0);
    out[i] = static_cast<std::uint8_t>((high << 4) | (low & 0x0F));
  }
  if (bad != 0) {
    return std::nullopt;
  }
  return out;
}

std::string digest_hex(const Digest& digest) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (std::size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = k_digits[digest[i] >> 4];
    out[2 * i + 1] = k_digits[digest[i] & 0x0F];
  }
  return out;
}

MappedArray::~MappedArray() {
  if (m_data != nullptr) {
    ::munmap(m_data, m_mapped);
  }
}

void MappedArray::reserve(std::size_t count) {
  if (count <= m_capacity) {
    return;
  }
  const std::size_t page = page_size();
  const std::size_t bytes = (count * sizeof(IndexRecord) + page - 1) / page * page;
  void* grown = m_data == nullptr ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                  : ::mremap(m_data, m_mapped, bytes, MREMAP_MAYMOVE);
  if (grown == MAP_FAILED) {
    throw std::bad_alloc();
  }
  // Huge pages where the kernel offers them: a million records are 22 000 small pages, each a fault
  // on first touch (a large part of start-up at a million), or 44 huge ones.
  ::madvise(grown, bytes, MADV_HUGEPAGE);
  m_data = static_cast<IndexRecord*>(grown);
  m_mapped = bytes;
  m_capacity = bytes / sizeof(IndexRecord);
}

void MappedArray::resize(std::size_t count) {
  reserve(count);
  if (count > m_size) {
    std::memset(static_cast<void*>(m_data + m_size), 0, (count - m_size) * sizeof(IndexRecord));
  }
  m_size = count;
}

void MappedArray::push_back(const IndexRecord& record) {
  if (m_size == m_capacity) {
    // Grows by an eighth: mremap moves pages, it does not copy them, so small steps are cheap.
    reserve(std::max<std::size_t>(1024, m_capacity + m_capacity / 8));
  }
  std::memcpy(static_cast<void*>(m_data + m_size), &record, sizeof record);
  ++m_size;
}

void CompactIndex::finish_load() {
  IndexRecord* begin = m_sorted.data();
  IndexRecord* end = begin + m_sorted.size();
  // Usually loaded in key order already. Otherwise in place: a stable sort would allocate a second
  // array as large as the first.
  if (!std::is_sorted(begin, end, key_less)) {
    std::sort(begin, end, key_less);
  }
  // Duplicates cannot come from a table whose key is unique; keep one if they ever do.
  IndexRecord* out = std::unique(begin, end, [](const IndexRecord& a, const IndexRecord& b) { return a.key == b.key; });
  m_sorted.resize(static_cast<std::size_t>(out - begin));
  m_tombstones = 0;
  m_live = m_sorted.size() + m_overlay.size();
}

const IndexRecord* CompactIndex::find_sorted(const Digest& key) const {
  const IndexRecord* begin = m_sorted.data();
  const IndexRecord* end = begin + m_sorted.size();
  const IndexRecord* it =
      std::lower_bound(begin, end, key, [](const IndexRecord& r, const Digest& k) { return r.key < k; });
  return it != end && it->key == key ? it : nullptr;
}

IndexRecord* CompactIndex::find_sorted(const Digest& key) {
  return const_cast<IndexRecord*>(static_cast<const CompactIndex*>(this)->find_sorted(key));
}

const IndexRecord* CompactIndex::find(const Digest& key) const {
  if (!m_overlay.empty()) {
    if (const auto it = m_overlay.find(key); it != m_overlay.end()) {
      return &it->second;
    }
  }
  const IndexRecord* record = find_sorted(key);
  return record != nullptr && record->removed == 0 ? record : nullptr;
}

void CompactIndex::upsert(const IndexRecord& record) {
  if (IndexRecord* in_place = find_sorted(record.key)) {
    if (in_place->removed != 0) {
      --m_tombstones;
      ++m_live;
    } else {
      release_extras(in_place->extras);
    }
    *in_place = record;
    in_place->removed = 0;
    return;
  }
  const auto [it, inserted] = m_overlay.try_emplace(record.key, record);
  if (inserted) {
    ++m_live;
  } else {
    release_extras(it->second.extras);
    it->second = record;
  }
  maybe_merge();
}

bool CompactIndex::erase(const Digest& key) {
  if (const auto it = m_overlay.find(key); it != m_overlay.end()) {
    release_extras(it->second.extras);
    m_overlay.erase(it);
    --m_live;
    return true;
  }
  IndexRecord* record = find_sorted(key);
  if (record == nullptr || record->removed != 0) {
    return false;
  }
  release_extras(record->extras);
  record->extras = 0;
  record->removed = 1;
  ++m_tombstones;
  --m_live;
  maybe_merge();
  return true;
}

std::optional<Digest> CompactIndex::next_key(const std::optional<Digest>& after) const {
  const IndexRecord* begin = m_sorted.data();
  const IndexRecord* end = begin + m_sorted.size();
  const IndexRecord* it =
      after ? std::upper_bound(begin, end, *after, [](const Digest& k, const IndexRecord& r) { return k < r.key; })
            : begin;
  while (it != end && it->removed != 0) {
    ++it;
  }
  const auto overlay = after ? m_overlay.upper_bound(*after) : m_overlay.begin();
  if (it == end) {
    return overlay == m_overlay.end() ? std::nullopt : std::optional<Digest>(overlay->first);
  }
  if (overlay != m_overlay.end() && overlay->first < it->key) {
    return overlay->first;
  }
  return it->key;
}

std::uint32_t CompactIndex::intern_type(std::string_view type) {
  if (type.empty()) {
    return 0;
  }
  const std::string key(type);
  if (const auto it = m_type_ids.find(key); it != m_type_ids.end()) {
    return it->second;
  }
  if (m_types.size() >= (1U << 31) - 1) {
    return 0; // two billion distinct types: no longer told apart
  }
  const auto id = static_cast<std::uint32_t>(m_types.size());
  m_types.push_back(key);
  m_type_ids.emplace(key, id);
  return id;
}

const std::string& CompactIndex::type_name(std::uint32_t id) const {
  return id < m_types.size() ? m_types[id] : m_types[0];
}

std::uint32_t CompactIndex::add_extras(const Extras& extras) {
  if (extras.empty()) {
    return 0;
  }
  std::string encoded;
  for (const std::string* field : {&extras.content_encoding, &extras.content_disposition, &extras.etag,
                                   &extras.last_modified, &extras.cache_control, &extras.expires}) {
    put(encoded, *field);
  }
  m_extras_bytes += encoded.capacity();
  if (!m_free_extras.empty()) {
    const std::uint32_t slot = m_free_extras.back();
    m_free_extras.pop_back();
    m_extras[slot] = std::move(encoded);
    return slot + 1;
  }
  m_extras.push_back(std::move(encoded));
  return static_cast<std::uint32_t>(m_extras.size());
}

Extras CompactIndex::extras(std::uint32_t id) const {
  Extras out;
  if (id == 0 || id > m_extras.size()) {
    return out;
  }
  std::string_view in = m_extras[id - 1];
  out.content_encoding = take(in);
  out.content_disposition = take(in);
  out.etag = take(in);
  out.last_modified = take(in);
  out.cache_control = take(in);
  out.expires = take(in);
  return out;
}

void CompactIndex::release_extras(std::uint32_t id) {
  if (id == 0 || id > m_extras.size()) {
    return;
  }
  std::string& slot = m_extras[id - 1];
  m_extras_bytes -= std::min(m_extras_bytes, slot.capacity());
  std::string().swap(slot);
  m_free_extras.push_back(id - 1);
}

std::size_t CompactIndex::memory_bytes() const noexcept {
  // A std::map node: the value plus three pointers and a colour, rounded by malloc.
  constexpr std::size_t k_node = sizeof(std::pair<const Digest, IndexRecord>) + 48;
  return m_sorted.size() * sizeof(IndexRecord) + m_overlay.size() * k_node +
         m_extras.capacity() * sizeof(std::string) + m_extras_bytes;
}

void CompactIndex::maybe_merge() {
  // A merge moves the whole array (tens of ms at a million): worth it once the overlay or the
  // tombstones reach 1/64 of it, and never for fewer than 1024.
  const std::size_t threshold = std::max<std::size_t>(1024, m_sorted.size() / 64);
  if (m_overlay.size() >= threshold || m_tombstones >= threshold) {
    merge();
  }
}

void CompactIndex::merge() {
  IndexRecord* data = m_sorted.data();
  std::size_t kept = m_sorted.size();
  if (m_tombstones > 0) {
    kept = static_cast<std::size_t>(
        std::remove_if(data, data + kept, [](const IndexRecord& r) { return r.removed != 0; }) - data);
    m_tombstones = 0;
  }
  const std::size_t added = m_overlay.size();
  m_sorted.resize(kept + added);
  data = m_sorted.data();
  // Merge from the back, in place: the largest of both goes to the end.
  std::size_t write = kept + added;
  std::size_t read = kept;
  for (auto it = m_overlay.rbegin(); it != m_overlay.rend(); ++it) {
    while (read > 0 && it->first < data[read - 1].key) {
      data[--write] = data[--read];
    }
    data[--write] = it->second;
  }
  m_overlay.clear();
}

} // namespace withcache::store::detail
