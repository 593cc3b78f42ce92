#include "kernels/launch/programmatic_launch.h"

namespace tg::kernels {

namespace {
thread_local bool t_enabled = false;
}

ProgrammaticLaunchScope::ProgrammaticLaunchScope(bool on) : previous_(t_enabled) { t_enabled = on; }
ProgrammaticLaunchScope::~ProgrammaticLaunchScope() { t_enabled = previous_; }
bool programmatic_launch_enabled() { return t_enabled; }

}  // namespace tg::kernels
