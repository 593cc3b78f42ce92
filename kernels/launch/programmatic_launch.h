// Programmatic dependent launch (PDL, Hopper): a kernel launched with it may start while the kernel before it in the
// stream is still running -- its blocks are scheduled, its launch latency hidden -- and waits on the device
// (griddepcontrol.wait, dev::pdl_wait) until that kernel has completed and its writes are visible. A decode step is
// ~200 small dependent kernels, so the launch gaps between them are a real share of its time.
//
// Host side: which launches use it. A ProgrammaticLaunchScope turns it on for the launches that the calling thread
// makes through kernels::cuda::launch (kernels/launch/launch.cuh) while the scope lives; the decoder opens one around
// a decode step. Launches outside a scope, and kernels launched with <<<>>>, are ordinary stream-ordered launches.
//
// The rule that keeps it correct: every kernel launched through kernels::cuda::launch calls dev::pdl_wait() before it
// reads or writes any memory that an earlier kernel of the stream touches, and may call dev::pdl_launch_dependents()
// (the next kernel's blocks may then be scheduled; they still wait in their own pdl_wait for this kernel's
// completion). A kernel after one that never triggers starts when that one completes. By convention every kernel's
// first statement is dev::pdl_enter(), both calls in the build's order (kernels/launch/launch.cuh).
#pragma once

namespace tg::kernels {

class ProgrammaticLaunchScope {
 public:
  explicit ProgrammaticLaunchScope(bool on = true);
  ~ProgrammaticLaunchScope();
  ProgrammaticLaunchScope(const ProgrammaticLaunchScope&) = delete;
  ProgrammaticLaunchScope& operator=(const ProgrammaticLaunchScope&) = delete;

 private:
  bool previous_;
};

// True while a ProgrammaticLaunchScope(true) is open on this thread.
bool programmatic_launch_enabled();

// When a kernel triggers its dependents: the CUDA-core GEMVs (kernels/gemm/gemv.h, every entry point) trigger at the
// end of each block by default, so that a large successor grid is placed evenly once their last blocks retire. While
// an EarlyTriggerScope(true) is open on the calling thread, the GEMVs it launches trigger right after their wait
// instead, so that a small successor (the decode step's one-block RMSNorm) is placed, and waits in its own pdl_wait,
// while they still run. Scheduling only: the same results.
class EarlyTriggerScope {
 public:
  explicit EarlyTriggerScope(bool on = true);
  ~EarlyTriggerScope();
  EarlyTriggerScope(const EarlyTriggerScope&) = delete;
  EarlyTriggerScope& operator=(const EarlyTriggerScope&) = delete;

 private:
  bool previous_;
};
bool early_trigger_enabled();

}  // namespace tg::kernels
