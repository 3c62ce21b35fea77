import logging

from logscrub import ScrubFilter


def test_filter_scrubs_rendered_message():
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "login %s password=%s", ("bob", "pw"), None)
    assert ScrubFilter().filter(record) is True
    assert record.getMessage() == "login bob password=***"
    assert record.args is None


def test_filter_on_a_logger(caplog):
    logger = logging.getLogger("logscrub.test")
    logger.addFilter(ScrubFilter())
    try:
        with caplog.at_level(logging.INFO, logger="logscrub.test"):
            logger.info("token=%s", "abc")
    finally:
        logger.filters.clear()
    assert caplog.records[-1].getMessage() == "token=***"
