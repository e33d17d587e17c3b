"""The ONE façade every protocol calls (REST today; WebDAV, tus, web, links next).

Policy lives here and only here: tenant scoping, preconditions, quota, versions, trash,
the change/audit events. Adapters parse and render; they never compute a quota or walk
the tree themselves.
"""
