// The step timeline: when each kernel of a decode step really starts inside the replayed chain (issue 7's question
// "what does each kernel cost in the step", which ncu's one-node-at-a-time timings cannot answer).
//
// Built only with CMake -DTEGEMMA_STEP_TIMELINE=ON (a profiling build; the default build has none of it). Then every
// kernel's dev::pdl_enter() (kernels/launch/launch.cuh) has block (0,0,0) thread 0 append one record to a device
// buffer while a StepTimeline is alive: %globaltimer at entry (the block is resident: how early the programmatic
// launch made it) and after its programmatic wait (its predecessor has completed), with the grid and block shape.
// Kernels of one chain pass their waits in chain order, so the records come out in execution order and the time
// between two consecutive waits is what the first kernel cost inside the chain. The host side notes every launch
// made through kernels::cuda::launch (name, grid, block, whether the stream was capturing), so a captured graph's
// kernels can be matched to its replays' records (ci/step_timeline.py).
//
// In a build without it, StepTimeline's constructor throws a tg::Error that says how to build it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor.h"

namespace tg::kernels {

// True in a -DTEGEMMA_STEP_TIMELINE=ON build with the CUDA backend.
bool step_timeline_built();

// Device-side per translation unit (launch.cuh): every .cu that includes launch.cuh registers a setter of its own
// copy of the buffer pointer at static initialisation. Not for direct use.
using StepTimelineSetter = void (*)(unsigned long long* buffer);
bool register_step_timeline_setter(StepTimelineSetter setter);
// Host-side note of one launch (launch.cuh's launch_clustered), while a StepTimeline is alive.
void step_timeline_note_launch(const void* kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, bool capturing);
bool step_timeline_active();

struct StepTimelineLaunch {  // one host-side launch, in launch order
  std::string kernel;
  unsigned grid[3];
  unsigned block;
  bool captured;  // launched into a stream capture (a graph node, replayed later) rather than run eagerly
};
struct StepTimelineRecord {  // one device-side record, in execution order
  std::uint64_t entry_ns, wait_ns;  // %globaltimer at the kernel's entry and after its programmatic wait
  unsigned grid[3];
  unsigned block;
};

// Records while alive (one at a time per process). `capacity`: device records kept; later ones are counted, dropped.
class StepTimeline {
 public:
  explicit StepTimeline(std::size_t capacity = std::size_t{1} << 20);
  ~StepTimeline();
  StepTimeline(const StepTimeline&) = delete;
  StepTimeline& operator=(const StepTimeline&) = delete;

  // Synchronises the device, then copies the records out (the counter's total includes dropped ones).
  std::vector<StepTimelineRecord> records(std::uint64_t* total = nullptr) const;
  std::vector<StepTimelineLaunch> launches() const;
  // {"launches": [...], "records": [...], "dropped": n} through a temporary file renamed into place.
  void write_json(const std::string& path) const;

 private:
  Buffer buffer_;  // device: [0] records appended, [1] capacity, then 4 words per record
  std::size_t capacity_ = 0;
};

}  // namespace tg::kernels
