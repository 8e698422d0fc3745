"""instructrl: the InstructGPT loop (Ouyang et al., 2022) as usable software.

prompts -> demonstrations -> SFT -> K samples -> rankings -> reward model -> PPO-ptx -> evaluation
"""

__version__ = "0.1.0"
