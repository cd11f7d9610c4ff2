mod admin_support;
