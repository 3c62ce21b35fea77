from slugkit import UniqueSlugger


def test_first_slug_is_plain():
    assert UniqueSlugger()("Intro") == "intro"


def test_duplicates_get_numbered():
    unique = UniqueSlugger()
    assert [unique("Intro") for _ in range(3)] == ["intro", "intro-2", "intro-3"]


def test_taken_slugs_are_respected():
    unique = UniqueSlugger(taken=["intro"])
    assert unique("Intro") == "intro-2"


def test_suffix_fits_in_max_length():
    unique = UniqueSlugger(max_length=8, taken=["overview"])
    slug = unique("Overview")
    assert slug == "overvi-2"
    assert len(slug) <= 8


def test_untitled_fallback():
    unique = UniqueSlugger()
    assert unique("???") == "n-a"
    assert unique("!!!") == "n-a-2"


def test_release_frees_a_slug():
    unique = UniqueSlugger()
    unique("Intro")
    unique.release("intro")
    assert "intro" not in unique
    assert unique("Intro") == "intro"
