// ragloom's own thread pool for its CPU kernels (gguf_matmul.cpp, paged_attention.cpp,
// layer_ops.cpp): ragloom::parallel_for, with at::parallel_for's arguments and splitting.
//
// Why not at::parallel_for: it runs on an OpenMP team that belongs to the calling thread.
// The engine steps on its own thread, and the caller's main thread (loading the model, or
// any torch work of the application) has a team too. With two teams on the machine, libgomp
// stops spinning between parallel regions and puts its workers to sleep after each one, so
// every region pays a wake-up: a 400,000-float add went from 53 to 105 us a call, and a decode
// step makes ~100 such calls. The workers here spin for a while after each job (a decode
// step's next layer comes within microseconds) and sleep only when no job comes
// (kSpinSeconds), so an idle engine burns no CPU.
//
// One pool per process, with hardware_concurrency() - 1 workers; a job uses as many threads
// as at::get_num_threads() allows in the calling thread (torch.set_num_threads). A job
// submitted while another runs (a second caller thread) runs on its caller alone. After a
// fork, the child makes a pool of its own. The function must not throw (the kernels check
// their arguments before they split the work).
#pragma once
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace ragloom {

namespace detail {

// A worker waits this long for the next job before it sleeps: the first kBusySeconds on the
// core alone, then yielding it to any other thread that wants it (torch's OpenMP threads run
// the GEMMs of a prefill between these jobs: a worker that kept its core took a cold prompt's
// time to first token from 7.7 to 12.2 s).
constexpr double kBusySeconds = 50e-6;
constexpr double kSpinSeconds = 2e-3;

class Pool {
 public:
  using Call = void (*)(const void* fn, int64_t begin, int64_t end);

  explicit Pool(int workers) : workers_(workers) {
    for (int i = 1; i <= workers; ++i) std::thread([this, i] { loop(i); }).detach();
  }

  int workers() const { return workers_; }

  // Runs call(fn, ...) over `parts` chunks of `chunk` from `begin` (chunk 0 on the caller);
  // false, having run nothing, if another job holds the pool. After it, the workers wait for
  // the next job awake if `linger`, else they sleep at once.
  bool run(Call call, const void* fn, int64_t begin, int64_t end, int64_t chunk, int parts, bool linger) {
    std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    call_ = call;
    fn_ = fn;
    begin_ = begin;
    end_ = end;
    chunk_ = chunk;
    pending_.store(parts - 1, std::memory_order_relaxed);
    // one word for the job's number, linger and thread count, so a worker reads them at once
    job_.store(((job_.load(std::memory_order_relaxed) >> 9) + 1) << 9 | static_cast<uint64_t>(linger) << 8 |
                   static_cast<uint64_t>(parts),
               std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> sleeping(sleep_mutex_);
      wake_.notify_all();
    }
    call(fn, begin, std::min(end, begin + chunk));
    while (pending_.load(std::memory_order_acquire) > 0) _mm_pause();
    return true;
  }

 private:
  void loop(int index) {
    uint64_t seen = 0;  // (not a load: a job posted before this thread ran is still its job)
    for (;;) {
      seen = wait_for_job(seen, (seen >> 8) & 1 ? kSpinSeconds : 0.0);
      if (index >= static_cast<int>(seen & 0xff)) continue;  // not needed for this job
      const int64_t b = begin_ + index * chunk_;
      const int64_t e = std::min(end_, b + chunk_);
      if (b < e) call_(fn_, b, e);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  uint64_t wait_for_job(uint64_t seen, double spin_seconds) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto busy_until = start + std::chrono::duration<double>(kBusySeconds);
    const auto until = start + std::chrono::duration<double>(spin_seconds);
    for (int spins = 0; spin_seconds > 0; ++spins) {
      const uint64_t now = job_.load(std::memory_order_acquire);
      if (now != seen) return now;
      if ((spins & 63) == 63) {
        const auto t = clock::now();
        if (t > until) break;
        if (t > busy_until) std::this_thread::yield();  // torch's own threads may need the core
      }
      _mm_pause();
    }
    // asleep until a job comes: the count tells run() to notify, and the mutex makes the
    // check-then-wait atomic against that notify
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    wake_.wait(lock, [&] { return job_.load(std::memory_order_seq_cst) != seen; });
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    return job_.load(std::memory_order_acquire);
  }

  const int workers_;
  std::mutex mutex_;  // held by the caller of the job in flight
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> job_{0};  // (job number << 9) | (linger << 8) | threads it uses
  std::atomic<int> sleepers_{0};
  std::atomic<int> pending_{0};
  Call call_ = nullptr;  // the job (written before job_ changes)
  const void* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0, chunk_ = 0;
};

// Guards the pool's creation. Held across fork() (pthread_atfork), so that a child never
// starts with it locked by a thread it does not have.
inline std::mutex& pool_lock() {
  static std::mutex made;
  static const int registered = pthread_atfork([] { pool_lock().lock(); }, [] { pool_lock().unlock(); },
                                               [] { pool_lock().unlock(); });
  (void)registered;
  return made;
}

// The process's pool (leaked on purpose: its threads outlive static destruction), made again
// in a forked child, which has none of its parent's threads.
inline Pool& pool() {
  static Pool* current = nullptr;
  static pid_t owner = 0;
  std::lock_guard<std::mutex> lock(pool_lock());
  if (current == nullptr || owner != getpid()) {
    const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    current = new Pool(static_cast<int>(cpus) - 1);
    owner = getpid();
  }
  return *current;
}

}  // namespace detail

// f(begin, end) over [begin, end) in chunks of at least `grain`, one chunk per thread, like
// at::parallel_for (on one thread: f(begin, end)). `linger`: the next job is likely to come
// within microseconds (a decode step's layers), so the workers wait for it awake; pass false
// where torch's own threads run next (the GEMMs of a prefill), which need the cores.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f, bool linger = true) {
  if (begin >= end) return;
  const int64_t range = end - begin;
  const int64_t threads = std::max(1, at::get_num_threads());
  const int64_t wanted = std::min<int64_t>(threads, (range + std::max<int64_t>(1, grain) - 1) / std::max<int64_t>(1, grain));
  if (wanted > 1) {
    detail::Pool& pool = detail::pool();
    const int parts = static_cast<int>(std::min<int64_t>({wanted, pool.workers() + 1, 255}));
    if (parts > 1) {
      const int64_t chunk = (range + parts - 1) / parts;
      auto call = [](const void* fn, int64_t b, int64_t e) { (*static_cast<const F*>(fn))(b, e); };
      if (pool.run(call, &f, begin, end, chunk, parts, linger)) return;
    }
  }
  f(begin, end);
}

}  // namespace ragloom
