#include "kernels/launch/programmatic_launch.h"

namespace tg::kernels {

namespace {
thread_local bool t_enabled = false;
thread_local bool t_early_trigger = false;
}  // namespace

ProgrammaticLaunchScope::ProgrammaticLaunchScope(bool on) : previous_(t_enabled) { t_enabled = on; }
ProgrammaticLaunchScope::~ProgrammaticLaunchScope() { t_enabled = previous_; }
bool programmatic_launch_enabled() { return t_enabled; }

EarlyTriggerScope::EarlyTriggerScope(bool on) : previous_(t_early_trigger) { t_early_trigger = on; }
EarlyTriggerScope::~EarlyTriggerScope() { t_early_trigger = previous_; }
bool early_trigger_enabled() { return t_early_trigger; }

}  // namespace tg::kernels
