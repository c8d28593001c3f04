c = get_config()  # noqa
