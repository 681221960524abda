#pragma once

/**
 * @file
 * A small `Expected<T, E>`: a value or an error, for outcomes that are
 * expected (a malformed URL, a miss, an origin 404). C++23's std::expected
 * is not available in C++20; this carries the part of its interface we use.
 */

#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

namespace withcache {

/** Wraps an error so it can be returned where an Expected<T, E> is expected. */
template <class E> struct Unexpected { E error; };

/** Builds an Unexpected from an error value. */
template <class E> Unexpected<std::decay_t<E>> unexpected(E&& error) {
  return Unexpected<std::decay_t<E>>{std::forward<E>(error)};
}

/**
 * Holds either a T or an E. Reading the value of an error (or the error of a
 * value) is a programming error and throws std::logic_error.
 * Not thread-safe beyond what T and E are.
 */
template <class T, class E> class Expected {
 public:
  Expected(const T& value) : m_state(std::in_place_index<0>, value) {}
  Expected(T&& value) : m_state(std::in_place_index<0>, std::move(value)) {}
  template <class G>
  Expected(Unexpected<G> error) : m_state(std::in_place_index<1>, std::move(error.error)) {}

  /** True when a value is held. */
  [[nodiscard]] bool has_value() const noexcept { return m_state.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /** The value; throws std::logic_error when an error is held. */
  [[nodiscard]] T& value() & {
    check_value();
    return std::get<0>(m_state);
  }
  [[nodiscard]] const T& value() const& {
    check_value();
    return std::get<0>(m_state);
  }
  [[nodiscard]] T&& value() && {
    check_value();
    return std::get<0>(std::move(m_state));
  }

  /** The error; throws std::logic_error when a value is held. */
  [[nodiscard]] const E& error() const& {
    if (has_value()) {
      throw std::logic_error("Expected::error() called on a value");
    }
    return std::get<1>(m_state);
  }

  /** The value, or `fallback` when an error is held. */
  template <class U> [[nodiscard]] T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(m_state) : static_cast<T>(std::forward<U>(fallback));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check_value() const {
    if (!has_value()) {
      throw std::logic_error("Expected::value() called on an error");
    }
  }

  std::variant<T, E> m_state;
};

} // namespace withcache
