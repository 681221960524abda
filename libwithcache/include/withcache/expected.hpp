#pragma once

/**
 * @file
 * A small `Expected<T, E>`: a value or an error, for outcomes that are
 * expected (a malformed URL, a miss, an origin 404). C++23's std::expected
 * is not available in C++20; this carries the part of its interface we use,
 * plus `WITHCACHE_TRY` / `WITHCACHE_TRY_ASSIGN` in the style of ccache's
 * `util/expected.hpp` for passing an error up one level.
 */

#include <stdexcept>
#include <type_traits>
#include <utility>
#include <variant>

namespace withcache {

/** Wraps an error so it can be returned where an Expected<T, E> is expected. */
template <class E> struct Unexpected {
  E error;
};

/** Builds an Unexpected from an error value. */
template <class E> Unexpected<std::decay_t<E>> unexpected(E&& error) {
  return Unexpected<std::decay_t<E>>{std::forward<E>(error)};
}

/** The value type of an Expected<T, E> that carries nothing (a success or an error). */
struct Ok {};

/**
 * Holds either a T or an E. Reading the value of an error (or the error of a
 * value) is a programming error and throws std::logic_error.
 * Not thread-safe beyond what T and E are.
 */
template <class T, class E> class Expected {
 public:
  using value_type = T;
  using error_type = E;

  Expected()
    requires std::is_same_v<T, Ok>
      : m_state(std::in_place_index<0>, Ok{}) {}
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
    check_error();
    return std::get<1>(m_state);
  }
  [[nodiscard]] E&& error() && {
    check_error();
    return std::get<1>(std::move(m_state));
  }

  /** The value, or `fallback` when an error is held. */
  template <class U> [[nodiscard]] T value_or(U&& fallback) const& {
    return has_value() ? std::get<0>(m_state) : static_cast<T>(std::forward<U>(fallback));
  }

  /** `f(value)` (itself an Expected with the same error type), or this error. */
  template <class F> auto and_then(F&& f) const& {
    using R = std::invoke_result_t<F, const T&>;
    static_assert(std::is_same_v<typename R::error_type, E>, "and_then must keep the error type");
    return has_value() ? std::forward<F>(f)(std::get<0>(m_state)) : R(unexpected(std::get<1>(m_state)));
  }
  template <class F> auto and_then(F&& f) && {
    using R = std::invoke_result_t<F, T&&>;
    static_assert(std::is_same_v<typename R::error_type, E>, "and_then must keep the error type");
    return has_value() ? std::forward<F>(f)(std::get<0>(std::move(m_state)))
                       : R(unexpected(std::get<1>(std::move(m_state))));
  }

  /** Expected<f(value), E>, or this error. */
  template <class F> auto transform(F&& f) const& {
    using U = std::decay_t<std::invoke_result_t<F, const T&>>;
    return has_value() ? Expected<U, E>(std::forward<F>(f)(std::get<0>(m_state)))
                       : Expected<U, E>(unexpected(std::get<1>(m_state)));
  }

  /** Expected<T, f(error)>: the same value, or the error mapped. */
  template <class F> auto transform_error(F&& f) const& {
    using G = std::decay_t<std::invoke_result_t<F, const E&>>;
    return has_value() ? Expected<T, G>(std::get<0>(m_state))
                       : Expected<T, G>(unexpected(std::forward<F>(f)(std::get<1>(m_state))));
  }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void check_value() const {
    if (!has_value()) {
      throw std::logic_error("Expected::value() called on an error");
    }
  }
  void check_error() const {
    if (has_value()) {
      throw std::logic_error("Expected::error() called on a value");
    }
  }

  std::variant<T, E> m_state;
};

} // namespace withcache

#define WITHCACHE_CONCAT_IMPL(a_, b_) a_##b_
#define WITHCACHE_CONCAT(a_, b_) WITHCACHE_CONCAT_IMPL(a_, b_)

/** Evaluates `expr_` (an Expected); when it holds an error, returns that error from the calling function. */
#define WITHCACHE_TRY(expr_)                                                                                  \
  do {                                                                                                        \
    auto&& withcache_try_result_ = (expr_);                                                                   \
    if (!withcache_try_result_) {                                                                             \
      return ::withcache::unexpected(std::move(withcache_try_result_).error());                               \
    }                                                                                                         \
  } while (false)

/**
 * `WITHCACHE_TRY_ASSIGN(auto x, f())`: declares/assigns `x` from the value of
 * `f()`, or returns its error from the calling function.
 */
#define WITHCACHE_TRY_ASSIGN(var_, expr_) WITHCACHE_TRY_ASSIGN_IMPL(var_, expr_, WITHCACHE_CONCAT(withcache_try_, __LINE__))
#define WITHCACHE_TRY_ASSIGN_IMPL(var_, expr_, tmp_)                                                          \
  auto tmp_ = (expr_);                                                                                        \
  if (!tmp_) {                                                                                                \
    return ::withcache::unexpected(std::move(tmp_).error());                                                  \
  }                                                                                                           \
  var_ = std::move(tmp_).value()
