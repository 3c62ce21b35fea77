"""GitHub: issues by URL (api.py, issues.py) and the Action that answers them with draft pull
requests (action.py). Through the REST API with githubkit; GITHUB_API_URL points elsewhere
(GitHub Enterprise, the tests' loopback stand-in). The token never reaches a sandbox, a
trajectory or the model."""
