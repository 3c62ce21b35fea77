"""envconf: typed settings from environment variables and .env files."""

from .parsing import parse_bool, parse_list, read_dotenv
from .settings import MissingSetting, Settings

__all__ = ["MissingSetting", "Settings", "parse_bool", "parse_list", "read_dotenv"]
__version__ = "0.9.2"
