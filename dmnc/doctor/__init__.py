"""`dmnc doctor`: checks of the machine, Docker, the VM and a running dmnc, each with a verdict and a fix."""
