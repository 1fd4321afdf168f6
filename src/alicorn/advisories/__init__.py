"""Advisory feeds: where security, bugfix and enhancement advisories come from.

``model`` holds the domain values (:class:`~alicorn.advisories.model.Advisory` and its parts);
each feed format is one module that turns its input into those values (``updateinfo`` reads the
``updateinfo.xml`` of RPM repositories, as Bodhi, Red Hat and createrepo_c write it).
"""
