// The `vswitch` control CLI. All logic lives in VSwitchCLI so tests can drive it.
import VSwitchCLI

VSwitchCommand.main()
