__version__ = '0.1.0'


def parse_version_info(version_str):
    """Parse '0.1.0' (or '0.1.0rc1') into a tuple of ints and strings."""
    parts = []
    for x in version_str.split('.'):
        parts.append(int(x) if x.isdigit() else x)
    return tuple(parts)


version_info = parse_version_info(__version__)
