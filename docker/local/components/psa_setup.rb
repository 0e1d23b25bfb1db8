# Idempotent setup of the local PSA (Redmine), run with `rails runner` after the migrations
# and the default data: REST API on, the integration user with its API key (written to
# PSSYNC_PSA_KEY_FILE, 0600), its role, and the custom fields pssync reads and writes.
# Prints one JSON line describing what it found or made.
require 'json'
require 'securerandom'

key_file = ENV.fetch('PSSYNC_PSA_KEY_FILE')
login = ENV.fetch('PSSYNC_PSA_LOGIN', 'pssync')
made = []

Setting.rest_api_enabled = '1'

# Only what pssync does: projects, versions, issues, memberships and approved time.
permissions = %i[
  add_project edit_project add_subprojects select_project_modules manage_members
  manage_versions view_issues add_issues edit_issues
  view_time_entries log_time edit_time_entries log_time_for_other_users
]
role = Role.find_by(name: 'pssync integration') || Role.new(name: 'pssync integration')
made << 'role' if role.new_record?
role.permissions = permissions
role.assignable = true
role.issues_visibility = 'all'
role.time_entries_visibility = 'all'
role.users_visibility = 'members_of_visible_projects'
role.save!
# A non-admin creating a project becomes its member with this role.
Setting.new_project_user_role_id = role.id.to_s

user = User.find_by_login(login) || User.new
if user.new_record?
  user.login = login
  user.firstname = 'pssync'
  user.lastname = 'integration'
  user.mail = "#{login}@localhost.invalid"
  user.password = SecureRandom.urlsafe_base64(24)
  made << 'user'
end
user.admin = false
user.status = User::STATUS_ACTIVE
user.save!

# Redmine grants `add_project` only to users holding a role with it in some project:
# the integration user is a member of one private anchor project.
anchor = Project.find_by(identifier: 'pssync-integration') ||
  Project.new(name: 'pssync integration', identifier: 'pssync-integration', is_public: false)
if anchor.new_record?
  anchor.enabled_module_names = []
  anchor.save!
  made << 'anchor project'
end
unless Member.where(project_id: anchor.id, user_id: user.id).exists?
  Member.create!(project: anchor, principal: user, role_ids: [role.id])
  made << 'membership'
end

def ensure_field(klass, name, format, made, extra = {})
  field = klass.find_by(name: name) || klass.new(name: name, field_format: format)
  made << "custom field #{name}" if field.new_record?
  field.visible = true
  field.editable = true if field.respond_to?(:editable=)
  extra.each { |k, v| field.send("#{k}=", v) }
  field.save!
  field
end
ensure_field(TimeEntryCustomField, 'Approved', 'bool', made, default_value: '0')
ensure_field(ProjectCustomField, 'ERP project code', 'string', made)
ensure_field(ProjectCustomField, 'Invoiced to date', 'float', made)
ensure_field(ProjectCustomField, 'Recognized revenue', 'float', made)

# A new key when the file is missing: the old one is unknown to the caller.
unless File.exist?(key_file) && File.read(key_file).strip == user.api_key
  Token.where(user_id: user.id, action: 'api').delete_all
  user.reload
  key = user.api_key
  File.open(key_file, File::WRONLY | File::CREAT | File::TRUNC, 0o600) { |f| f.write(key) }
  File.chmod(0o600, key_file)
  made << 'api key'
end

puts JSON.generate(user: user.id, role: role.id, login: login, made: made)
