"""`python -m cwm_agent.cli`: the same as the `cwm-agent` command."""

from cwm_agent.cli.main import main

main()
