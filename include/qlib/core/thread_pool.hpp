// thread_pool: a parallel_executor over persistent std::threads (the caller works too).
#pragma once

#include <algorithm>
#include <atomic>
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
// starts 3 workers. Workers sleep between calls. One parallel_for runs at a time;
// concurrent callers queue.
class thread_pool final : public parallel_executor {
 public:
  explicit thread_pool(int threads) : threads_(threads) {
    QLIB_CHECK(threads >= 1, errc::invalid_argument, "thread_pool needs >= 1 thread, got " + std::to_string(threads));
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      count_ = count;
      next_.store(0, std::memory_order_relaxed);
      busy_workers_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    run_tasks(task, count);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_workers_ == 0; });
    task_ = nullptr;
  }

 private:
  void run_tasks(const task_ref& task, index_t count) {
    for (index_t i = next_.fetch_add(1, std::memory_order_relaxed); i < count;
         i = next_.fetch_add(1, std::memory_order_relaxed))
      task(i);
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      const task_ref* task;
      index_t count;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        task = task_;
        count = count_;
      }
      run_tasks(*task, count);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --busy_workers_;
      }
      done_.notify_one();
    }
  }

  int threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const task_ref* task_ = nullptr;
  index_t count_ = 0;
  std::atomic<index_t> next_{0};
  int busy_workers_ = 0;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

// The process-wide pool used when a caller asks for threads but passes no executor:
// created on first use with one thread per hardware thread (at least 2).
inline thread_pool& default_thread_pool() {
  static thread_pool pool(static_cast<int>(std::max(2u, std::thread::hardware_concurrency())));
  return pool;
}

}  // namespace qlib
