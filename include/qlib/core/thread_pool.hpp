// thread_pool: a parallel_executor over persistent std::threads (the caller works too).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qlib/core/error.hpp"
#include "qlib/core/parallel.hpp"

namespace qlib {

// `threads` is the total parallelism, the calling thread included: thread_pool(4)
// starts 3 workers. One parallel_for runs at a time; concurrent callers queue.
//
// Between calls, workers spin for up to spin_microseconds (default 50) watching for the
// next job before they sleep on a condition variable, and the caller spins the same
// way waiting for them: a wake-up costs tens of microseconds, a lot next to a GEMM of
// a few hundred. Measured on 2 Zen 4 cores, 2 threads: 512^3 int8 GEMM 856 GOPS
// sleeping at once, 926 spinning 50 us (1.99x one thread); M = 1 x 4096 x 4096: 279 and
// 380. On a busy shared machine spinning threads take time from working ones (a 1 ms
// spin cut the 512^3 case to a third); pass 0 there, or where idle spinning is unwelcome.
class thread_pool final : public parallel_executor {
 public:
  explicit thread_pool(int threads, int spin_microseconds = 50) : threads_(threads), spin_us_(spin_microseconds) {
    QLIB_CHECK(threads >= 1, errc::invalid_argument, "thread_pool needs >= 1 thread, got " + std::to_string(threads));
    QLIB_CHECK(spin_microseconds >= 0, errc::invalid_argument, "thread_pool: negative spin time");
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int concurrency() const noexcept override { return threads_; }

  void parallel_for(index_t count, task_ref task) override {
    if (count <= 0) return;
    std::lock_guard<std::mutex> one_at_a_time(run_mutex_);
    if (workers_.empty() || count == 1) {
      for (index_t i = 0; i < count; ++i) task(i);
      return;
    }
    task_ = &task;
    count_ = count;
    next_.store(0, std::memory_order_relaxed);
    busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);  // a worker about to sleep sees it or is woken
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_tasks(task, count);
    // Every worker checks in before the job (and task_) may go away.
    if (!spin_until([&] { return busy_workers_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  template <class Ready>
  bool spin_until(Ready ready) const {
    if (ready()) return true;
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    for (unsigned i = 1;; ++i) {
      if (ready()) return true;
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) return ready();
    }
  }

  void run_tasks(const task_ref& task, index_t count) {
    for (index_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count;
         i = next_.fetch_add(1, std::memory_order_relaxed))
      task(i);
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      auto job_or_stop = [&] {
        return stop_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(job_or_stop)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, job_or_stop);
      }
      if (stop_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      run_tasks(*task_, count_);
      if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller checks under this mutex before it sleeps
        done_.notify_one();
      }
    }
  }

  int threads_;
  int spin_us_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const task_ref* task_ = nullptr;
  index_t count_ = 0;
  std::atomic<index_t> next_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

// The process-wide pool used when a caller asks for threads but passes no executor:
// created on first use with one thread per hardware thread (at least 2).
inline thread_pool& default_thread_pool() {
  static thread_pool pool(static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
  return pool;
}

}  // namespace qlib
